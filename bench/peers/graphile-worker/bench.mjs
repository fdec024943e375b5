// graphile-worker draining N no-op jobs: one of Keel's benchmark peers (issue 7, scenario 6).
// `keel-bench peers` installs (`npm ci`) and runs it.
//
//   node bench.mjs --database-url postgres://… --jobs N --concurrency C
//                  [--mode default|batched] [--batch 500] [--callers 4]
//
// On a fresh database keel_peer_<random> (created through the server of the URL given, and
// dropped WITH (FORCE) at the end) it installs graphile-worker's schema, enqueues N no-op jobs
// with `addJobs` in chunks of --batch (timed), then runs a worker pool at concurrency C and
// times the drain until the jobs table is empty (graphile-worker deletes a job when it
// completes). Modes: `default` = graphile's defaults; `batched` = local queue of 500 jobs and
// batched completions/failures (`localQueue: { size: 500 }`, `completeJobBatchDelay: 0`,
// `failJobBatchDelay: 0`, as in graphile-worker's performance docs). With --callers K > 0 it
// then measures one job per transaction (`addJob`) from K concurrent callers, no worker
// running. Prints one JSON line on stdout; progress goes to stderr.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import pg from "pg";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const TASK = "keel_bench_noop";

function fail(message) {
  process.stderr.write(`graphile-worker peer: error: ${message}\n`);
  process.exit(2);
}

function count(name, value, fallback) {
  if (value === undefined) return fallback;
  const n = Number(String(value).replaceAll("_", ""));
  if (!Number.isInteger(n) || n < 0) fail(`--${name}: not a count: ${value}`);
  return n;
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        "database-url": { type: "string" },
        jobs: { type: "string" },
        concurrency: { type: "string" },
        mode: { type: "string", default: "default" },
        batch: { type: "string" },
        callers: { type: "string" },
      },
      strict: true,
    }).values;
  } catch (e) {
    fail(e.message);
  }
  const opts = {
    databaseUrl: parsed["database-url"] ?? process.env.DATABASE_URL,
    jobs: count("jobs", parsed.jobs, 0),
    concurrency: count("concurrency", parsed.concurrency, 0),
    mode: parsed.mode,
    batch: count("batch", parsed.batch, 500),
    callers: count("callers", parsed.callers, 4),
  };
  if (!opts.databaseUrl) fail("--database-url (or DATABASE_URL) is required");
  if (opts.jobs < 1 || opts.concurrency < 1 || opts.batch < 1) {
    fail("--jobs, --concurrency and --batch must be at least 1");
  }
  if (!["default", "batched"].includes(opts.mode)) {
    fail(`--mode: expected default or batched, got ${opts.mode}`);
  }
  return opts;
}

/** `url` with its database name replaced by `name` (query string kept). */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** The graphile-worker version actually installed. */
function installedVersion() {
  const path = new URL("./node_modules/graphile-worker/package.json", import.meta.url);
  return JSON.parse(readFileSync(path, "utf8")).version;
}

/** graphile's logger, quiet below warnings, on stderr. */
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`  graphile-worker ${level}: ${message}\n`);
  }
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A pg pool we own, so it is ended before the database is dropped. */
function pool(url, max) {
  const p = new pg.Pool({ connectionString: url, max });
  const report = (e) => process.stderr.write(`  graphile-worker pool: ${e.message}\n`);
  p.on("error", report);
  p.on("connect", (client) => client.on("error", report));
  return p;
}

async function bench(opts, url) {
  const utilsPool = pool(url, 10);
  // graphile's advice for the worker pool: 10 or concurrency + 2, whichever is larger.
  const workerPool = pool(url, Math.max(10, opts.concurrency + 2));
  const utils = await makeWorkerUtils({ pgPool: utilsPool, logger });
  try {
    await utils.migrate();

    // Bulk enqueue: `addJobs` of --batch jobs at a time (one statement per chunk).
    let t = process.hrtime.bigint();
    for (let next = 0; next < opts.jobs; next += opts.batch) {
      const end = Math.min(next + opts.batch, opts.jobs);
      const specs = [];
      for (let i = next; i < end; i++) specs.push({ identifier: TASK, payload: { i } });
      await utils.addJobs(specs);
    }
    const enqueue = opts.jobs / seconds(t);
    process.stderr.write(
      `  graphile-worker: enqueue, ${opts.batch} per addJobs: ${enqueue.toFixed(0)} jobs/s\n`,
    );

    // Drain: from starting the pool until the jobs table is empty.
    let ran = 0;
    const taskList = {
      [TASK]: async () => {
        ran += 1;
      },
    };
    const worker = {};
    if (opts.mode === "batched") {
      Object.assign(worker, {
        localQueue: { size: 500 },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      });
    }
    const remaining = async () =>
      utils.withPgClient(async (client) => {
        const { rows } = await client.query(
          "SELECT COUNT(*)::int AS n FROM graphile_worker._private_jobs",
        );
        return rows[0].n;
      });
    t = process.hrtime.bigint();
    const runner = await run({
      pgPool: workerPool,
      concurrency: opts.concurrency,
      noHandleSignals: true,
      logger,
      taskList,
      preset: { worker },
    });
    let last = { ran: 0, at: Date.now() };
    for (;;) {
      if (ran >= opts.jobs && (await remaining()) === 0) break;
      if (ran !== last.ran) {
        last = { ran, at: Date.now() };
      } else if (Date.now() - last.at > 60_000) {
        throw new Error(`drain stalled at ${ran}/${opts.jobs} jobs run`);
      }
      await sleep(2);
    }
    const drainSeconds = seconds(t);
    const drain = opts.jobs / drainSeconds;
    process.stderr.write(
      `  graphile-worker (${opts.mode}): drain at concurrency ${opts.concurrency}: ` +
        `${drain.toFixed(0)} jobs/s (${drainSeconds.toFixed(2)} s)\n`,
    );
    await runner.stop();
    await runner.promise;

    // One job per transaction (`addJob`) from several callers, no worker running.
    let single = null;
    if (opts.callers > 0) {
      t = process.hrtime.bigint();
      const callers = [];
      for (let c = 0; c < opts.callers; c++) {
        const share =
          Math.floor(opts.jobs / opts.callers) + (c < opts.jobs % opts.callers ? 1 : 0);
        callers.push(
          (async () => {
            for (let i = 0; i < share; i++) await utils.addJob(TASK, { i });
          })(),
        );
      }
      await Promise.all(callers);
      single = opts.jobs / seconds(t);
      process.stderr.write(
        `  graphile-worker: enqueue, 1 per tx from ${opts.callers} callers: ` +
          `${single.toFixed(0)} jobs/s\n`,
      );
    }
    return { enqueue, drain, drainSeconds, single };
  } finally {
    await utils.release();
    await utilsPool.end();
    await workerPool.end();
  }
}

function seconds(since) {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

const round1 = (x) => (x === null ? null : Math.round(x * 10) / 10);

async function main() {
  const opts = options();
  const name = `keel_peer_${randomBytes(8).toString("hex")}`;
  const admin = new pg.Client({ connectionString: opts.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  let figures;
  try {
    figures = await bench(opts, withDatabase(opts.databaseUrl, name));
  } finally {
    // pg's pool.end() resolves before the server has seen every connection go: wait for
    // them, so dropping the database does not terminate live clients.
    for (let i = 0; i < 500; i++) {
      const { rows } = await admin.query(
        "SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE datname = $1",
        [name],
      );
      if (rows[0].n === 0) break;
      await sleep(10);
    }
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
  const line = {
    scenario: "peer",
    peer: "graphile-worker",
    mode: opts.mode,
    version: installedVersion(),
    backend: "postgres",
    n: opts.jobs,
    concurrency: opts.concurrency,
    batch: opts.batch,
    enqueue_jobs_per_s: round1(figures.enqueue),
    drain_jobs_per_s: round1(figures.drain),
    drain_seconds: Math.round(figures.drainSeconds * 1000) / 1000,
    enqueue_single_jobs_per_s: round1(figures.single),
    enqueue_callers: opts.callers,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

main().catch((e) => {
  process.stderr.write(`graphile-worker peer: error: ${e?.stack ?? e}\n`);
  process.exit(1);
});

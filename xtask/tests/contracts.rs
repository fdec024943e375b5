//! `check-contracts` and `docs` on planted fixtures: each test starts from a blessed, clean
//! catalog (a `keel-contracts` dump written here by hand), plants one failure the way a
//! developer would — a removed field, a retyped field, a consumer of a vanished version, a
//! PII field, a stale catalog … — and checks the message names the field and the fix.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use xtask::contracts::{self, Dump, Finding, Kind};
use xtask::docs::{self, Freshness};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A throwaway workspace root.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("contracts-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the fixture root");
        Self(root)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).expect("a written file")
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Fixture",
        "description": "A fixture event.",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid", "description": "An id."})
}

fn event(name: &str, version: u32, schema: Value) -> Value {
    json!({
        "name": name,
        "version": version,
        "latest": true,
        "upcasts_to": null,
        "state_transfer": null,
        "schema": schema,
        "example": {"id": "0190…"},
        "stored_example": {"name": name, "version": version, "payload": {}},
    })
}

fn record_created() -> Value {
    event(
        "record.created",
        1,
        object(json!({"record_id": uuid()}), &["record_id"]),
    )
}

fn invoice_paid() -> Value {
    event(
        "invoice.paid",
        1,
        object(
            json!({
                "invoice_id": uuid(),
                "status": {"type": "string", "enum": ["open", "paid", "void"]},
                "attempt": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
            }),
            &["invoice_id", "status"],
        ),
    )
}

fn key(name: &str, version: u32) -> Value {
    json!({"name": name, "version": version})
}

fn modules() -> Value {
    json!([
        {"name": "records", "publishes": [key("record.created", 1)], "listeners": [], "jobs": []},
        {"name": "billing", "publishes": [key("invoice.paid", 1)], "listeners": [], "jobs": []},
        {"name": "notifications", "publishes": [], "jobs": [], "listeners": [
            {"name": "notifications.on_event_deliver_webhooks", "queue": "events",
             "consumes": [key("record.created", 1), key("invoice.paid", 1)]}
        ]},
    ])
}

fn dump_of(events: Vec<Value>, modules: Value) -> Dump {
    let text = json!({"format": contracts::FORMAT, "events": events, "modules": modules});
    Dump::parse(&text.to_string()).expect("a fixture dump")
}

fn base() -> Dump {
    dump_of(vec![record_created(), invoice_paid()], modules())
}

/// A root whose snapshots and golden events match [`base`].
fn blessed(name: &str) -> Root {
    let root = Root::new(name);
    let report = contracts::check(&root.0, &base(), true).expect("bless");
    assert_eq!(report.findings, Vec::<Finding>::new());
    root
}

fn check(root: &Root, dump: &Dump) -> Vec<Finding> {
    contracts::check(&root.0, dump, false)
        .expect("check runs")
        .findings
}

/// The catalog with the schema of `name.v1` replaced by `schema`.
fn with_schema(name: &str, schema: Value) -> Dump {
    let mut events = vec![record_created(), invoice_paid()];
    for e in &mut events {
        if e["name"] == name {
            e["schema"] = schema.clone();
        }
    }
    dump_of(events, modules())
}

fn only(findings: &[Finding], kind: Kind) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.kind == kind)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_blessed_catalog_is_clean_and_has_a_schema_and_golden_event_per_version() {
    let root = blessed("clean");
    assert_eq!(check(&root, &base()), Vec::<Finding>::new());
    let schema: Value =
        serde_json::from_str(&root.read("crates/events/schemas/record.created.v1.json")).unwrap();
    assert_eq!(schema, record_created()["schema"]);
    let golden: Value =
        serde_json::from_str(&root.read("crates/events/golden/invoice.paid.v1.json")).unwrap();
    assert_eq!(golden["name"], "invoice.paid");
}

#[test]
fn a_removed_field_is_breaking_names_the_field_and_cannot_be_blessed() {
    let root = blessed("removed");
    let dump = with_schema(
        "record.created",
        object(json!({"record": uuid()}), &["record"]),
    );
    let findings = check(&root, &dump);
    let breaking = only(&findings, Kind::Breaking);
    assert!(
        breaking.iter().any(|m| m.contains("record.created.v1: breaking change: field `record_id` was removed or renamed (new: `record`)")
            && m.contains("add version 2 with an upcaster")),
        "{findings:#?}"
    );
    // The new field is required, which old stored events lack: breaking too.
    assert!(
        breaking
            .iter()
            .any(|m| m.contains("field `record` was added as a required field"))
    );
    let before = root.read("crates/events/schemas/record.created.v1.json");
    let blessed = contracts::check(&root.0, &dump, true).unwrap();
    assert_eq!(
        only(&blessed.findings, Kind::Breaking),
        breaking,
        "--bless cannot bless a breaking change"
    );
    assert_eq!(
        root.read("crates/events/schemas/record.created.v1.json"),
        before
    );
}

#[test]
fn a_retyped_field_is_breaking() {
    let root = blessed("retyped");
    let dump = with_schema(
        "record.created",
        object(
            json!({"record_id": {"type": "integer", "format": "int64"}}),
            &["record_id"],
        ),
    );
    let breaking = only(&check(&root, &dump), Kind::Breaking);
    assert_eq!(breaking.len(), 1, "{breaking:#?}");
    assert!(breaking[0].contains(
        "field `record_id` was retyped from string (uuid) to integer (int64) — add version 2 with an upcaster"
    ));
}

#[test]
fn a_field_made_required_is_breaking() {
    let root = blessed("required");
    let mut schema = invoice_paid()["schema"].clone();
    schema["required"] = json!(["invoice_id", "status", "attempt"]);
    let breaking = only(
        &check(&root, &with_schema("invoice.paid", schema)),
        Kind::Breaking,
    );
    assert_eq!(breaking.len(), 1, "{breaking:#?}");
    assert!(
        breaking[0]
            .starts_with("invoice.paid.v1: breaking change: field `attempt` was made required")
    );
}

#[test]
fn a_field_no_longer_nullable_is_breaking() {
    let root = blessed("nullable");
    let mut schema = invoice_paid()["schema"].clone();
    schema["properties"]["attempt"]["type"] = json!("integer");
    let breaking = only(
        &check(&root, &with_schema("invoice.paid", schema)),
        Kind::Breaking,
    );
    assert!(
        breaking[0].contains("field `attempt` no longer accepts null"),
        "{breaking:#?}"
    );
}

#[test]
fn a_removed_enum_variant_is_breaking_and_a_new_one_is_not() {
    let root = blessed("enum");
    let mut schema = invoice_paid()["schema"].clone();
    schema["properties"]["status"]["enum"] = json!(["open", "paid"]);
    let breaking = only(
        &check(&root, &with_schema("invoice.paid", schema.clone())),
        Kind::Breaking,
    );
    assert_eq!(breaking.len(), 1);
    assert!(breaking[0].contains("field `status` lost enum variant `void`"));

    schema["properties"]["status"]["enum"] = json!(["open", "paid", "void", "refunded"]);
    let findings = check(&root, &with_schema("invoice.paid", schema));
    assert!(only(&findings, Kind::Breaking).is_empty());
    assert!(
        only(&findings, Kind::Unblessed)[0]
            .contains("field `status` gained enum variant `refunded`")
    );
}

#[test]
fn a_new_optional_field_is_compatible_and_passes_after_bless() {
    let root = blessed("optional");
    let mut schema = invoice_paid()["schema"].clone();
    schema["properties"]["paid_at"] = json!({"type": ["string", "null"], "format": "date-time"});
    let dump = with_schema("invoice.paid", schema.clone());
    let findings = check(&root, &dump);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, Kind::Unblessed);
    assert!(
        findings[0]
            .message
            .contains("field `paid_at` was added as an optional field")
    );
    assert!(
        findings[0]
            .message
            .contains("run `cargo xtask check-contracts --bless`")
    );

    let blessed = contracts::check(&root.0, &dump, true).unwrap();
    assert!(blessed.findings.is_empty(), "{:#?}", blessed.findings);
    assert_eq!(
        blessed.written,
        ["crates/events/schemas/invoice.paid.v1.json"]
    );
    assert_eq!(check(&root, &dump), Vec::<Finding>::new());
    let committed: Value =
        serde_json::from_str(&root.read("crates/events/schemas/invoice.paid.v1.json")).unwrap();
    assert_eq!(committed, schema);
}

#[test]
fn documentation_changes_need_a_bless_but_are_not_breaking() {
    let root = blessed("docs-only");
    let mut schema = record_created()["schema"].clone();
    schema["properties"]["record_id"]["description"] = json!("The new record.");
    let findings = check(&root, &with_schema("record.created", schema));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].kind, Kind::Unblessed);
    assert!(findings[0].message.contains("documentation changed"));
}

/// record.created at v1 (superseded) and v2 (latest), as after a breaking change done right.
fn two_versions(v1_upcasts: bool) -> Vec<Value> {
    let mut v1 = record_created();
    v1["latest"] = json!(false);
    v1["upcasts_to"] = if v1_upcasts { json!(2) } else { Value::Null };
    let v2 = event(
        "record.created",
        2,
        object(
            json!({"record_id": uuid(), "import_id": uuid()}),
            &["record_id"],
        ),
    );
    vec![v1, v2, invoice_paid()]
}

fn consuming(record_created: u32, published: u32) -> Value {
    let mut m = modules();
    m[0]["publishes"] = json!([key("record.created", published)]);
    m[2]["listeners"][0]["consumes"][0] = key("record.created", record_created);
    m
}

#[test]
fn a_new_version_with_an_upcaster_is_written_by_bless_and_consumers_may_move_to_it() {
    let root = blessed("v2");
    let dump = dump_of(two_versions(true), consuming(2, 2));
    let findings = check(&root, &dump);
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert!(
        findings
            .iter()
            .all(|f| f.kind == Kind::Unblessed && f.subject == "record.created.v2")
    );
    let blessed = contracts::check(&root.0, &dump, true).unwrap();
    assert!(blessed.findings.is_empty(), "{:#?}", blessed.findings);
    assert_eq!(
        blessed.written,
        [
            "crates/events/schemas/record.created.v2.json",
            "crates/events/golden/record.created.v2.json"
        ]
    );
    // A listener still on v1 cannot be fed v2 events: upcasting only goes forward.
    let stale = only(
        &check(&root, &dump_of(two_versions(true), consuming(1, 2))),
        Kind::Consumer,
    );
    assert_eq!(stale.len(), 1);
    assert!(stale[0].contains(
        "listener `notifications.on_event_deliver_webhooks` (module `notifications`) consumes record.created.v1, but `records` publishes v2, which does not upcast to v1"
    ), "{stale:#?}");
}

#[test]
fn a_consumer_of_a_vanished_version_fails() {
    let root = blessed("vanished");
    // The listener consumes v2, which never existed.
    let findings = check(
        &root,
        &dump_of(vec![record_created(), invoice_paid()], consuming(2, 1)),
    );
    let consumer = only(&findings, Kind::Consumer);
    assert_eq!(consumer.len(), 1);
    assert!(consumer[0].contains(
        "consumes record.created.v2, a version that does not exist (the catalog has v1)"
    ));

    // v1 is deleted from the catalog outright: its snapshot and golden event accuse it.
    let v2_only = {
        let mut v2 = two_versions(true);
        v2.remove(0);
        v2
    };
    let findings = check(&root, &dump_of(v2_only, consuming(2, 2)));
    let breaking = only(&findings, Kind::Breaking);
    assert!(breaking.iter().any(|m| m.starts_with("record.created.v1: breaking change: crates/events/schemas/record.created.v1.json is committed but the version is gone")), "{breaking:#?}");
    assert!(breaking.iter().any(|m| {
        m.contains("golden/record.created.v1.json holds a stored event of a version that is gone")
    }));
}

#[test]
fn a_consumer_of_a_version_without_an_upcaster_fails() {
    let root = blessed("no-upcaster");
    // records still publishes v1, which has no upcaster, and the listener consumes v2.
    let findings = check(&root, &dump_of(two_versions(false), consuming(2, 1)));
    let consumer = only(&findings, Kind::Consumer);
    assert!(consumer.iter().any(|m| m.contains("record.created.v1 (published by `records`) has no upcaster to v2")), "{findings:#?}");
    assert!(
        only(&findings, Kind::Publisher)[0]
            .contains("publishes record.created.v1, an older version")
    );
}

#[test]
fn a_consumer_of_an_event_nobody_publishes_fails() {
    let root = blessed("unpublished");
    let mut m = modules();
    m[2]["listeners"][0]["consumes"] = json!([key("record.created", 1), key("record.deleted", 1)]);
    let consumer = only(
        &check(&root, &dump_of(vec![record_created(), invoice_paid()], m)),
        Kind::Consumer,
    );
    assert_eq!(
        consumer,
        [
            "record.deleted.v1: listener `notifications.on_event_deliver_webhooks` (module `notifications`) consumes record.deleted.v1, which no module publishes; drop it from `consumes` or publish it (add it to the publishing module's `publishes`)"
        ]
    );
}

#[test]
fn a_module_publishing_an_event_outside_the_catalog_fails() {
    let root = blessed("uncatalogued");
    let mut m = modules();
    m[1]["publishes"] = json!([key("invoice.paid", 1), key("invoice.voided", 1)]);
    let publisher = only(
        &check(&root, &dump_of(vec![record_created(), invoice_paid()], m)),
        Kind::Publisher,
    );
    assert!(publisher[0].contains(
        "module `billing` publishes invoice.voided.v1, which is not in events::catalog::registry()"
    ));
}

fn with_field(name: &str, field: Value) -> Dump {
    let mut schema = record_created()["schema"].clone();
    schema["properties"][name] = field;
    with_schema("record.created", schema)
}

#[test]
fn a_field_that_looks_like_personal_data_fails_the_discipline_lint() {
    let root = blessed("pii");
    let dump = with_field("owner_email", json!({"type": ["string", "null"]}));
    let discipline = only(&check(&root, &dump), Kind::Discipline);
    assert_eq!(discipline.len(), 1);
    assert!(discipline[0].starts_with(
        "record.created.v1: field `owner_email` looks like personal data (an email address: the word `email`)"
    ));
    assert!(discipline[0].contains("mark the type as event-carried state transfer with a reason"));
    for field in ["ownerName", "phone", "billing_address"] {
        let dump = with_field(field, json!({"type": "string", "maxLength": 8}));
        assert_eq!(
            only(&check(&root, &dump), Kind::Discipline).len(),
            1,
            "{field}"
        );
    }
}

#[test]
fn free_text_and_nested_snapshots_fail_the_discipline_lint() {
    let root = blessed("snapshot");
    let text = only(
        &check(&root, &with_field("note", json!({"type": "string"}))),
        Kind::Discipline,
    );
    assert!(text[0].contains("field `note` is free text"), "{text:#?}");

    let mut schema = record_created()["schema"].clone();
    schema["properties"]["record"] = json!({"$ref": "#/$defs/Record"});
    schema["$defs"] =
        json!({"Record": {"type": "object", "properties": {"title": {"type": "string"}}}});
    let nested = only(
        &check(&root, &with_schema("record.created", schema)),
        Kind::Discipline,
    );
    assert!(
        nested[0].contains("field `record` is a nested snapshot (an object); carry its id instead"),
        "{nested:#?}"
    );

    let untyped = only(
        &check(&root, &with_field("attributes", json!(true))),
        Kind::Discipline,
    );
    assert!(
        untyped[0].contains("field `attributes` is a nested snapshot (any JSON)"),
        "{untyped:#?}"
    );
}

#[test]
fn ids_enums_timestamps_amounts_and_codes_pass_the_discipline_lint() {
    let root = blessed("small");
    for (name, field) in [
        (
            "occurred_at",
            json!({"type": "string", "format": "date-time"}),
        ),
        (
            "amount_cents",
            json!({"type": "integer", "format": "int64"}),
        ),
        (
            "currency",
            json!({"type": "string", "pattern": "^[A-Z]{3}$"}),
        ),
        (
            "line_ids",
            json!({"type": "array", "items": {"type": "string", "format": "uuid"}}),
        ),
        ("kind", json!({"oneOf": [{"const": "a"}, {"const": "b"}]})),
    ] {
        assert!(
            only(&check(&root, &with_field(name, field)), Kind::Discipline).is_empty(),
            "{name}"
        );
    }
}

#[test]
fn state_transfer_with_a_reason_exempts_a_type_from_the_discipline_lint() {
    let root = blessed("state-transfer");
    let mut events = vec![record_created(), invoice_paid()];
    events[0]["schema"]["properties"]["owner_email"] = json!({"type": "string"});
    events[0]["state_transfer"] = json!("the CRM mirrors owners and has no query port");
    assert!(
        only(
            &check(&root, &dump_of(events.clone(), modules())),
            Kind::Discipline
        )
        .is_empty()
    );
    events[0]["state_transfer"] = json!("  ");
    assert_eq!(
        only(&check(&root, &dump_of(events, modules())), Kind::Discipline).len(),
        1,
        "a blank reason is no reason"
    );
}

#[test]
fn a_missing_golden_event_needs_a_bless() {
    let root = blessed("golden");
    std::fs::remove_file(root.0.join("crates/events/golden/record.created.v1.json")).unwrap();
    let findings = check(&root, &base());
    assert_eq!(findings.len(), 1);
    assert!(
        findings[0]
            .message
            .contains("golden/record.created.v1.json (its golden stored event) is missing")
    );
    // Golden events are written once and never rewritten by --bless.
    std::fs::write(
        root.0.join("crates/events/golden/invoice.paid.v1.json"),
        "{\"kept\": true}",
    )
    .unwrap();
    contracts::check(&root.0, &base(), true).unwrap();
    assert_eq!(
        root.read("crates/events/golden/invoice.paid.v1.json"),
        "{\"kept\": true}"
    );
}

#[test]
fn a_stale_event_catalog_is_caught_and_rewritten() {
    let root = Root::new("docs");
    assert_eq!(
        docs::check(&root.0, &base()).unwrap(),
        Freshness::Stale(None)
    );
    docs::write(&root.0, &base()).unwrap();
    assert_eq!(docs::check(&root.0, &base()).unwrap(), Freshness::Fresh);

    // A listener starts consuming invoice.paid v1 elsewhere; nobody regenerates the docs.
    let mut m = modules();
    m[0]["listeners"] = json!([{"name": "records.on_invoice_paid_archive", "queue": "events",
                               "consumes": [key("invoice.paid", 1)]}]);
    let changed = dump_of(vec![record_created(), invoice_paid()], m);
    assert!(matches!(
        docs::check(&root.0, &changed).unwrap(),
        Freshness::Stale(Some(_))
    ));
    docs::write(&root.0, &changed).unwrap();
    assert_eq!(docs::check(&root.0, &changed).unwrap(), Freshness::Fresh);
}

#[test]
fn the_catalog_shows_every_event_field_publisher_consumer_and_queue() {
    let md = docs::render(&base());
    for expected in [
        "```mermaid\nflowchart LR\n",
        "  m_records --> e_record_created\n",
        "  e_record_created -->|v1| l_notifications_on_event_deliver_webhooks\n",
        "  l_notifications_on_event_deliver_webhooks --> q_events\n",
        "| [`record.created`](#recordcreated) | v1 | `records` (v1) | `notifications.on_event_deliver_webhooks` (v1) |",
        "| `notifications.on_event_deliver_webhooks` | `notifications` | v1 | `events` |",
        "| `record_id` | string (uuid) | yes | An id. |",
        "| `status` | enum (open \\| paid \\| void) | yes |  |",
        "| `attempt` | integer (uint32), nullable | no |  |",
    ] {
        assert!(md.contains(expected), "missing {expected:?} in\n{md}");
    }
}

//! The admin dashboard: server-rendered HTML pages under `/admin` for the people on call —
//! queue depths and throughput, scheduled jobs, dead-letter groups with replay, one job's
//! attempts with replay and purge, the trace tree of a correlation id, and webhook endpoints
//! with their delivery log and 24 h success rate.
//!
//! Every page needs the admin token: either a session started at `/admin/login` (a random
//! id in an `HttpOnly; SameSite=Strict; Path=/admin` cookie; the token itself is never
//! stored) or the `Authorization: Bearer` header the JSON API takes. Without a configured
//! token the pages answer 403 and say so. Forms that change state are POSTs that carry the
//! session's CSRF token. No JavaScript: links and forms do everything.

mod chart;
mod pages;
mod schedules;
mod session;
mod webhooks;

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::Markup;
use runtime::RuntimeError;
use serde::Deserialize;

use self::pages::Page;
use self::session::{Flash, Sessions};
use super::EdgeState;
use super::admin::{constant_time_eq, start_group_replay};

/// What the dashboard handlers share.
#[derive(Debug, Clone)]
struct Dashboard {
    edge: EdgeState,
    sessions: Arc<Sessions>,
}

/// Who is looking: a logged-in session (whose forms must carry its CSRF token) or a caller
/// with the bearer token (no cookie, so no CSRF to guard against).
#[derive(Debug, Clone)]
struct Viewer {
    session: Option<String>,
    csrf: Option<String>,
    flash: Option<Flash>,
}

/// The dashboard's routes; sessions live as long as this router (one per process).
pub fn routes(state: EdgeState) -> Router {
    let dashboard = Dashboard {
        edge: state,
        sessions: Arc::new(Sessions::default()),
    };
    let pages = Router::new()
        .route("/admin", get(overview))
        .route("/admin/dead", get(dead_groups))
        .route("/admin/dead/groups/{id}", get(group_members))
        .route("/admin/dead/groups/{id}/replay", post(replay_group))
        .route("/admin/jobs/{id}", get(job))
        .route("/admin/jobs/{id}/replay", post(replay_job))
        .route("/admin/jobs/{id}/purge", post(purge_job))
        .route("/admin/trace", get(trace))
        .route("/admin/scheduled", get(schedule_list))
        .route("/admin/webhooks", get(webhook_endpoints))
        .route("/admin/webhooks/{id}", get(webhook_endpoint))
        .route("/admin/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            require_login,
        ));
    Router::new()
        .route("/admin/login", get(login_form).post(login))
        .merge(pages)
        .layer(axum::middleware::map_response(protective_headers))
        .with_state(dashboard)
}

/// Pages are private, never framed, never cached, and run no script at all.
async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// Lets a request through with a valid session or bearer token; sends browsers to the login
/// form; refuses everything while admin is disabled.
async fn require_login(State(d): State<Dashboard>, mut request: Request, next: Next) -> Response {
    let Some(expected) = d.edge.admin_token.as_deref() else {
        return html(StatusCode::FORBIDDEN, pages::disabled());
    };
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        if !constant_time_eq(bearer.as_bytes(), expected.as_bytes()) {
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That admin token is not right.")),
            );
        }
        request.extensions_mut().insert(Viewer {
            session: None,
            csrf: None,
            flash: None,
        });
        return next.run(request).await;
    }
    let session = session_id(headers).and_then(|id| Some((d.sessions.csrf(&id)?, id)));
    let Some((csrf, id)) = session else {
        return Redirect::to("/admin/login").into_response();
    };
    let flash = (request.method() == axum::http::Method::GET)
        .then(|| d.sessions.take_flash(&id))
        .flatten();
    request.extensions_mut().insert(Viewer {
        session: Some(id),
        csrf: Some(csrf),
        flash,
    });
    next.run(request).await
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)
        .map(str::to_owned)
}

async fn login_form(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    if d.edge.admin_token.is_none() {
        return html(StatusCode::FORBIDDEN, pages::disabled());
    }
    if session_id(&headers).is_some_and(|id| d.sessions.csrf(&id).is_some()) {
        return Redirect::to("/admin").into_response();
    }
    html(StatusCode::OK, pages::login(None))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(expected) = d.edge.admin_token.as_deref() else {
        return html(StatusCode::FORBIDDEN, pages::disabled());
    };
    if !constant_time_eq(form.token.trim().as_bytes(), expected.as_bytes()) {
        tracing::warn!("dashboard login refused");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That admin token is not right.")),
        );
    }
    let id = d.sessions.create();
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    tracing::info!("dashboard login");
    (
        [(header::SET_COOKIE, session::set_cookie(&id, secure))],
        Redirect::to("/admin"),
    )
        .into_response()
}

/// A state-changing form: it carries the session's CSRF token.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// The purge form's confirmation checkbox.
    #[serde(default)]
    confirm: Option<String>,
}

/// The refusal of a form whose CSRF token is not the session's (bearer callers have none to
/// check).
fn csrf_refusal(viewer: &Viewer, form: &ActionForm) -> Option<Response> {
    match &viewer.csrf {
        Some(expected) if !constant_time_eq(form.csrf.as_bytes(), expected.as_bytes()) => {
            tracing::warn!("dashboard form refused: CSRF token missing or wrong");
            Some(html(
                StatusCode::FORBIDDEN,
                pages::problem(
                    "This form has expired",
                    "The form did not carry this session's token. Reload the page and try again.",
                ),
            ))
        }
        _ => None,
    }
}

async fn logout(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&viewer, &form) {
        return refused;
    }
    if let Some(id) = &viewer.session {
        d.sessions.remove(id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/admin/login"),
    )
        .into_response()
}

/// Answers a state change: a flash for the session's next page, and back to `to`.
fn done(d: &Dashboard, viewer: &Viewer, ok: bool, text: String, to: &str) -> Response {
    if let Some(id) = &viewer.session {
        d.sessions.set_flash(id, Flash { ok, text });
    }
    Redirect::to(to).into_response()
}

/// A runtime failure as a page (404 for what does not exist).
fn failure(e: RuntimeError) -> Response {
    match e {
        RuntimeError::NotFound(message) => {
            html(StatusCode::NOT_FOUND, pages::problem("Not found", &message))
        }
        other => {
            tracing::error!(error = %other, "dashboard query failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::problem(
                    "Something went wrong",
                    "The query failed; the server log has the details.",
                ),
            )
        }
    }
}

fn page<'a>(viewer: &'a Viewer, title: &'a str, section: pages::Section) -> Page<'a> {
    Page {
        title,
        section,
        csrf: viewer.csrf.as_deref(),
        flash: viewer.flash.as_ref(),
    }
}

async fn overview(State(d): State<Dashboard>, Extension(viewer): Extension<Viewer>) -> Response {
    let rt = &d.edge.runtime;
    let now = rt.clock().now();
    let names: Vec<String> = rt.config().queues.keys().cloned().collect();
    let result = async {
        let stats = runtime::admin::queue_stats(rt.db(), rt.time(), &names).await?;
        let throughput = runtime::admin::throughput(rt.db(), rt.time()).await?;
        let activity = runtime::activity::last_hour(rt.db(), rt.time(), &names).await?;
        let alive =
            runtime::admin::workers_alive(rt.db(), rt.time(), rt.config().dead_after).await?;
        Ok::<_, RuntimeError>((stats, throughput, activity, alive))
    }
    .await;
    match result {
        Ok((stats, throughput, activity, alive)) => html(
            StatusCode::OK,
            pages::overview(
                &page(&viewer, "Queues", pages::Section::Queues),
                &stats,
                &throughput,
                &activity,
                alive,
                now,
            ),
        ),
        Err(e) => failure(e),
    }
}

async fn schedule_list(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let rt = &d.edge.runtime;
    match rt.schedule_statuses().await {
        Ok(list) => html(
            StatusCode::OK,
            schedules::page(
                &page(&viewer, "Schedules", pages::Section::Schedules),
                &list,
                rt.clock().now(),
            ),
        ),
        Err(e) => failure(e),
    }
}

async fn dead_groups(State(d): State<Dashboard>, Extension(viewer): Extension<Viewer>) -> Response {
    let rt = &d.edge.runtime;
    match runtime::admin::dead_letter_groups(rt.db(), None).await {
        Ok(groups) => html(
            StatusCode::OK,
            pages::dead_groups(
                &page(&viewer, "Dead letters", pages::Section::Dead),
                &groups,
            ),
        ),
        Err(e) => failure(e),
    }
}

async fn group_members(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let db = d.edge.runtime.db();
    let result = async {
        let group = runtime::admin::dead_letter_groups(db, None)
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| {
                RuntimeError::NotFound(format!(
                    "no dead-letter group has id {id} (it may have been replayed)"
                ))
            })?;
        let members: HashSet<&str> = group.job_ids.iter().map(String::as_str).collect();
        let jobs: Vec<_> = runtime::admin::dead_letters(db, Some(&group.queue))
            .await?
            .into_iter()
            .filter(|j| members.contains(j.id.as_str()))
            .collect();
        Ok::<_, RuntimeError>((group.clone(), jobs))
    }
    .await;
    match result {
        Ok((group, jobs)) => html(
            StatusCode::OK,
            pages::group_members(
                &page(&viewer, "Dead-letter group", pages::Section::Dead),
                &group,
                &jobs,
            ),
        ),
        Err(e) => failure(e),
    }
}

/// Starts the group's careful replay (canary first) in the background, like the JSON route.
async fn replay_group(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&viewer, &form) {
        return refused;
    }
    let rt = d.edge.runtime.clone();
    let group = match runtime::admin::dead_letter_groups(rt.db(), None).await {
        Ok(groups) => groups.into_iter().find(|g| g.id == id),
        Err(e) => return failure(e),
    };
    let Some(group) = group else {
        return done(
            &d,
            &viewer,
            false,
            "That group has no dead jobs any more (already replayed or purged).".into(),
            "/admin/dead",
        );
    };
    start_group_replay(rt, group.id.clone());
    let text = format!(
        "Replaying {} job{} of {} on {}: one runs first, the rest follow only if it succeeds.",
        group.count,
        if group.count == 1 { "" } else { "s" },
        group.job_type,
        group.queue
    );
    done(&d, &viewer, true, text, "/admin/dead")
}

async fn webhook_endpoints(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    match notifications::report::endpoints(d.edge.runtime.db()).await {
        Ok(endpoints) => html(
            StatusCode::OK,
            webhooks::endpoints(
                &page(&viewer, "Webhook endpoints", pages::Section::Webhooks),
                &endpoints,
            ),
        ),
        Err(e) => failure(RuntimeError::from(e)),
    }
}

async fn webhook_endpoint(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let not_found = || failure(RuntimeError::NotFound(format!("no webhook endpoint {id}")));
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return not_found();
    };
    let rt = &d.edge.runtime;
    match notifications::report::endpoint(rt.db(), uuid, rt.clock().now()).await {
        Ok(Some(report)) => html(
            StatusCode::OK,
            webhooks::endpoint(
                &page(&viewer, "Webhook endpoint", pages::Section::Webhooks),
                &report,
            ),
        ),
        Ok(None) => not_found(),
        Err(e) => failure(RuntimeError::from(e)),
    }
}

async fn job(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match runtime::admin::show_job(d.edge.runtime.db(), &id).await {
        Ok(job) => html(
            StatusCode::OK,
            pages::job(&page(&viewer, "Job", pages::Section::Dead), &job),
        ),
        Err(e) => failure(e),
    }
}

async fn replay_job(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&viewer, &form) {
        return refused;
    }
    let rt = &d.edge.runtime;
    let to = format!("/admin/jobs/{}", pages::path_segment(&id));
    match runtime::admin::replay(rt.db(), std::slice::from_ref(&id), rt.time()).await {
        Ok(replayed) if replayed.is_empty() => done(
            &d,
            &viewer,
            false,
            "Only a dead job can be replayed.".into(),
            &to,
        ),
        Ok(_) => {
            rt.wake_all();
            done(
                &d,
                &viewer,
                true,
                "Replayed: the job runs again with a fresh attempt budget.".into(),
                &to,
            )
        }
        Err(e) => failure(e),
    }
}

async fn purge_job(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&viewer, &form) {
        return refused;
    }
    let to = format!("/admin/jobs/{}", pages::path_segment(&id));
    if form.confirm.as_deref() != Some("yes") {
        return done(
            &d,
            &viewer,
            false,
            "Nothing purged: tick the box to confirm first.".into(),
            &to,
        );
    }
    match runtime::admin::purge(d.edge.runtime.db(), std::slice::from_ref(&id)).await {
        Ok(purged) if purged.is_empty() => done(
            &d,
            &viewer,
            false,
            "Only a dead job can be purged.".into(),
            &to,
        ),
        Ok(_) => {
            tracing::info!(job_id = %id, "dead job purged from the dashboard");
            done(
                &d,
                &viewer,
                true,
                format!("Purged job {id} and its attempts."),
                "/admin/dead",
            )
        }
        Err(e) => failure(e),
    }
}

#[derive(Debug, Deserialize)]
struct TraceQuery {
    #[serde(default)]
    correlation_id: String,
}

async fn trace(
    State(d): State<Dashboard>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<TraceQuery>,
) -> Response {
    let wanted = q.correlation_id.trim();
    let page = page(&viewer, "Trace", pages::Section::Trace);
    if wanted.is_empty() {
        return html(StatusCode::OK, pages::trace(&page, wanted, None));
    }
    match runtime::trace::trace(d.edge.runtime.db(), wanted).await {
        Ok(t) => html(StatusCode::OK, pages::trace(&page, wanted, Some(&t))),
        Err(RuntimeError::NotFound(_)) => {
            html(StatusCode::NOT_FOUND, pages::trace(&page, wanted, None))
        }
        Err(e) => failure(e),
    }
}

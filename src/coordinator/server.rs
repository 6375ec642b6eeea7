//! The HTTP API: routes, handlers, and serving (plain or TLS) with the background work.
//!
//! # Routes
//!
//! | route | token | answer |
//! |---|---|---|
//! | `POST /v1/reports` | agent | body [`NodeReport`] → 204, or 200 with the node's [`Directives`] when a rollout concerns it; 400 invalid, 403 node-bound token for another node, 409 stale, 413 too large |
//! | `POST /v1/nodes/{name}/heartbeat` | agent | body [`Heartbeat`] → 204, or 200 with [`Directives`]; 409 when the node is unknown or its stored report is of another instance or sequence (send a full report) |
//! | `GET /v1/nodes/{name}/directives?wait=S&known=ETAG` | agent | [`Directives`], held up to `S` (≤ 30) seconds while they still have the tag `known` |
//! | `GET /v1/daemonsets/{name}/history[?revision=N]` | read | `[RevisionView]` (with the spec text of revision N) |
//! | `POST /v1/daemonsets/{name}/rollout/pause`, `.../resume` | operator | 204 |
//! | `POST /v1/daemonsets/{name}/rollout/undo` | operator | body [`UndoRequest`] → `{"revision": N}` |
//! | `DELETE /v1/nodes/{name}` | agent | 204; 404 unknown (goodbye, `hostset node delete NAME`) |
//! | `GET /v1/daemonsets` | read | `[DaemonSetView]` |
//! | `GET /v1/daemonsets/{name}` | read | [`DaemonSetDetail`] |
//! | `GET /v1/daemonsets/{name}/endpoints` | read | `[Endpoint]` |
//! | `GET /v1/nodes` | read | `[NodeView]` |
//! | `GET /v1/nodes/{name}` | read | `{"node": NodeView, "report": NodeReport}` |
//! | `GET /metrics` | read | Prometheus text ([`super::metrics`]) |
//! | `GET /healthz` | none | `ok` |
//! | `GET /` | none | the status page; its script reads the API with the read token of the URL fragment |
//!
//! A read route takes an agent or a read token; a write route an agent token, and a
//! node-bound one only for its node; steering a rollout an operator token ([`super::auth`]). Errors are JSON `{"error": "..."}`
//! ([`ApiError`]); 401 carries `WWW-Authenticate: Bearer`. A refused request changes
//! nothing. The body limit is `--max-report-bytes` for reports and [`SMALL_BODY_LIMIT`]
//! elsewhere; the token is checked before the body is read.
//!
//! Every request is logged (tracing): errors from the server at `error`, refused
//! authentication at `warn`, other client errors at `info`, the rest at `debug` (agents
//! report and heartbeat all the time).
//!
//! [`DaemonSetDetail`]: crate::api::DaemonSetDetail
//! [`Directives`]: crate::rollout::Directives
//! [`UndoRequest`]: crate::api::UndoRequest

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::auth::{Denied, Principal};
use super::metrics::{self, Reason};
use super::page;
use super::specs::SpecWatcher;
pub use super::state::{AppState, Clock, Specs, system_clock};
use super::store::{FLUSH_INTERVAL, HeartbeatOutcome, ReportOutcome, Store, StoreError};
use crate::api::{ApiError, NodeView};
use crate::fleet;
use crate::report::{Heartbeat, NodeReport};

/// The body limit of every route but `POST /v1/reports`.
pub const SMALL_BODY_LIMIT: usize = 64 << 10;
/// How long open requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Quiet time after a spec directory event before it is re-read.
const SPEC_DEBOUNCE: Duration = crate::source::RECOMMENDED_DEBOUNCE;
/// Upper bound on how long a stream of events can postpone a rescan.
const SPEC_DEBOUNCE_MAX: Duration = Duration::from_millis(500);

/// The API, the metrics and the page over `state`. See the [module docs](self).
pub fn router(state: AppState) -> Router {
    let report_limit = state.max_report_bytes();
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(get_metrics))
        .route(
            "/v1/reports",
            post(post_report).layer(DefaultBodyLimit::max(report_limit)),
        )
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}", get(get_node).delete(delete_node))
        .route("/v1/nodes/{name}/heartbeat", post(post_heartbeat))
        .route("/v1/nodes/{name}/directives", get(get_directives))
        .route("/v1/daemonsets", get(list_daemonsets))
        .route("/v1/source", get(get_source))
        .route("/v1/daemonsets/{name}", get(get_daemonset))
        .route("/v1/daemonsets/{name}/history", get(get_history))
        .route("/v1/daemonsets/{name}/rollout/{verb}", post(post_rollout))
        .route("/v1/daemonsets/{name}/endpoints", get(get_endpoints))
        .fallback(|req: Request| async move {
            Failure::new(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                format!("no such path: {}", req.uri().path()),
            )
        })
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serve plain HTTP on `listener` until `shutdown` completes, with the background work (the
/// spec directory watcher, heartbeat flushes). At shutdown open requests get
/// [`SHUTDOWN_GRACE`] to finish, then the heartbeats are written.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_threads(listener, state, shutdown, 1).await
}

/// [`serve`] on `threads` threads: this task's, and `threads - 1` more, each with a
/// single-threaded runtime of its own accepting from the same socket (the kernel hands each
/// new connection to one of them). The background work runs here.
pub async fn serve_threads(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
    threads: usize,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let until_stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let mut listener = listener;
    let mut others = Vec::new();
    if threads > 1 {
        let std_listener = listener.into_std()?;
        for i in 1..threads {
            let (l, state, stop) = (std_listener.try_clone()?, state.clone(), stop_rx.clone());
            others.push(server_thread(i, move || async move {
                let listener = tokio::net::TcpListener::from_std(l)?;
                axum::serve(listener, router(state))
                    .with_graceful_shutdown(until_stopped(stop))
                    .await
            })?);
        }
        listener = tokio::net::TcpListener::from_std(std_listener)?;
    }
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(until_stopped(stop_rx))
        .into_future();
    supervise(
        state,
        server,
        move || {
            let _ = stop_tx.send(true);
        },
        shutdown,
        others,
    )
    .await
}

/// [`serve`] over TLS: `tls` from [`tls_config`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_tls_threads(listener, state, tls, shutdown, 1).await
}

/// [`serve_tls`] on `threads` threads, as [`serve_threads`].
pub async fn serve_tls_threads(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    threads: usize,
) -> anyhow::Result<()> {
    let std_listener = listener.into_std()?;
    let mut handles = Vec::new();
    let mut others = Vec::new();
    for i in 1..threads.max(1) {
        let handle = axum_server::Handle::new();
        handles.push(handle.clone());
        let (l, state, tls) = (std_listener.try_clone()?, state.clone(), tls.clone());
        others.push(server_thread(i, move || {
            axum_server::from_tcp_rustls(l, axum_server::tls_rustls::RustlsConfig::from_config(tls))
                .handle(handle)
                .serve(router(state).into_make_service())
        })?);
    }
    let handle = axum_server::Handle::new();
    handles.push(handle.clone());
    let server = axum_server::from_tcp_rustls(
        std_listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handle(handle)
    .serve(router(state.clone()).into_make_service());
    supervise(
        state,
        server,
        move || {
            for h in handles {
                h.graceful_shutdown(Some(SHUTDOWN_GRACE));
            }
        },
        shutdown,
        others,
    )
    .await
}

/// Run the server `make` makes on a thread of its own, in a single-threaded runtime; the
/// receiver gets its result.
fn server_thread<F, Fut>(
    i: usize,
    make: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("hostset-http-{i}"))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| runtime.block_on(make()));
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

/// Run `server` and the background work until `shutdown`; then `stop` the server, give it
/// [`SHUTDOWN_GRACE`], stop the background work and write the heartbeats.
async fn supervise(
    state: AppState,
    server: impl Future<Output = std::io::Result<()>>,
    stop: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
    others: Vec<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
) -> anyhow::Result<()> {
    let (bg_stop, bg_stopped) = watch::channel(false);
    let background = tokio::spawn(background(state.clone(), bg_stopped));
    let mut server = std::pin::pin!(server);
    let mut stop = Some(stop);
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            if let Some(stop) = stop.take() {
                stop();
            }
            match tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("requests still open after the shutdown grace period; closing");
                    Ok(())
                }
            }
        }
    };
    // The other serving threads: stopped with this one, given the same grace period.
    if let Some(stop) = stop.take() {
        stop();
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
    for other in others {
        match tokio::time::timeout_at(deadline, other).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "a serving thread failed: {e}"),
            Err(_) => {
                tracing::warn!("requests still open after the shutdown grace period; closing");
            }
            Ok(_) => {}
        }
    }
    let _ = bg_stop.send(true);
    let _ = background.await;
    let _ = blocking(&state, AppState::flush).await;
    result.map_err(Into::into)
}

/// Re-read the spec directory on changes (debounced) and write heartbeats every
/// [`FLUSH_INTERVAL`], until `stop`. Without inotify (watch limit reached), the directory is
/// re-read at every flush instead.
async fn background(state: AppState, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let dir = state.spec_dir_path();
    let mut watcher = match SpecWatcher::new(&dir, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the spec directory {}: {e}; re-reading it every {} s", dir.display(), FLUSH_INTERVAL.as_secs());
            None
        }
    };
    let mut flush_tick = tokio::time::interval(FLUSH_INTERVAL);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush_tick.tick().await;
    let mut due: Option<tokio::time::Instant> = None;
    let mut first_event: Option<tokio::time::Instant> = None;
    // Rollouts under way are decided again every second (progress deadlines, silent nodes).
    let mut rollout_tick = tokio::time::interval(Duration::from_secs(1));
    rollout_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut git = state.git_snapshots();
    loop {
        let rescan_due = async {
            match due {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            Ok(()) = async { git.as_mut().expect("guarded").changed().await }, if git.is_some() => {
                let snapshot = git.as_mut().expect("guarded").borrow_and_update().clone();
                let _ = blocking(&state, move |s| s.apply_git(snapshot)).await;
            }
            Some(()) = rx.recv() => {
                let now = tokio::time::Instant::now();
                let first = *first_event.get_or_insert(now);
                due = Some((now + SPEC_DEBOUNCE).min(first + SPEC_DEBOUNCE_MAX));
            }
            () = rescan_due => {
                due = None;
                first_event = None;
                // Watch first: a file written while the directory is read is not missed.
                if let Some(w) = &mut watcher {
                    w.rewatch();
                }
                let _ = blocking(&state, AppState::rescan_specs).await;
            }
            _ = rollout_tick.tick() => {
                if state.rollouts().active() || state.rollouts().take_hint() {
                    let _ = blocking(&state, |s| s.decide_rollouts(false)).await;
                }
            }
            _ = flush_tick.tick() => {
                let _ = blocking(&state, AppState::flush).await;
                if watcher.is_none() {
                    let _ = blocking(&state, AppState::rescan_specs).await;
                }
            }
        }
    }
}

/// Run blocking work (file reads, database writes) on the state off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state)).await
}

/// A store write, off the async threads; its failure is a 500.
async fn store_write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    blocking(state, move |s| f(s.store()))
        .await
        .map_err(|e| Failure::internal(format!("the store write did not complete: {e}")))?
        .map_err(|e| Failure::internal(e.to_string()))
}

/// A rustls server configuration from the TLS files: the certificate chain and key, and
/// when `client_ca` is given, client certificates required and verified against it.
pub fn tls_config(tls: &super::config::Tls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read_certs = |path: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("{}: cannot read PEM certificates", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        );
        Ok(certs)
    };
    let certs = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("{}: cannot read a PEM private key", tls.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: invalid CA certificate", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .with_context(|| format!("{}: cannot verify clients with it", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{} and {}: the key does not fit the certificate, or is unusable",
            tls.cert.display(),
            tls.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: `{"error": message}` with `status`, counted under `reason`.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    reason: Reason,
    message: String,
    challenge: Option<&'static str>,
}

/// Attached to error responses for [`observe`].
#[derive(Debug, Clone)]
struct Rejected {
    reason: Reason,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            status,
            reason,
            message: message.into(),
            challenge: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, Reason::Invalid, message)
    }

    fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, Reason::NotFound, message)
    }

    fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, Reason::Internal, message)
    }
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        let message = d.message();
        let challenge = match d {
            Denied::Forbidden(_) => {
                return Failure::new(StatusCode::FORBIDDEN, Reason::Forbidden, message);
            }
            Denied::Missing => r#"Bearer realm="hostset""#,
            Denied::Malformed => r#"Bearer realm="hostset", error="invalid_request""#,
            Denied::Unknown => r#"Bearer realm="hostset", error="invalid_token""#,
        };
        Failure {
            challenge: Some(challenge),
            ..Failure::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, message)
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ApiError {
                error: self.message.clone(),
            }),
        )
            .into_response();
        if let Some(c) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        response.extensions_mut().insert(Rejected {
            reason: self.reason,
            message: self.message,
        });
        response
    }
}

/// Log every request and count the refused ones.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    let ms = started.elapsed().as_millis() as u64;
    let rejected = response.extensions().get::<Rejected>();
    if status.is_client_error() || status.is_server_error() {
        let reason = rejected.map_or(Reason::Other, |r| r.reason);
        state.counters().rejected(reason);
        let error = rejected.map_or("", |r| r.message.as_str());
        let code = status.as_u16();
        let reason = reason.as_str();
        if status.is_server_error() {
            tracing::error!(%method, %path, status = code, ms, reason, error, "{method} {path}: {code} {error}");
        } else if matches!(reason, "unauthorized" | "forbidden") {
            tracing::warn!(%method, %path, status = code, ms, reason, error, "{method} {path}: {code} {error}");
        } else {
            tracing::info!(%method, %path, status = code, ms, reason, error, "{method} {path}: {code} {error}");
        }
    } else {
        let code = status.as_u16();
        tracing::debug!(%method, %path, status = code, ms, "{method} {path}: {code}");
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Any known token.
fn reader(state: &AppState, headers: &HeaderMap) -> Result<Principal, Failure> {
    Ok(state.auth().authenticate(headers)?)
}

/// An agent token (not yet checked against a node).
fn agent(state: &AppState, headers: &HeaderMap) -> Result<Principal, Failure> {
    Ok(reader(state, headers)?.require_agent()?)
}

/// The body of `req`, within the route's limit (`limit` is [`DefaultBodyLimit`]'s, named in
/// the error).
async fn body(req: Request, state: &AppState, what: &str, limit: usize) -> Result<Bytes, Failure> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Reason::TooLarge,
                format!("the {what} is larger than the limit of {limit} bytes"),
            )
        } else {
            Failure::invalid(format!("cannot read the {what}: {}", rejection.body_text()))
        }
    })
}

/// A node name a report may carry: a DNS-1123 subdomain, as Kubernetes' node names.
fn check_node_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() {
        return Err(Failure::invalid("invalid report: node.name is empty"));
    }
    let problems = crate::syntax::is_dns1123_subdomain(name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "invalid report: node.name \"{name}\": {}",
            problems.join("; ")
        )))
    }
}

/// 204, or 200 with the node's directives when there are any.
async fn answer_with_directives(state: &AppState, node: String) -> Result<Response, Failure> {
    // The common case, without a blocking task: nothing for this node.
    if !state.wants_directives(&node) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let directives = blocking(state, move |s| s.directives_for_answer(&node))
        .await
        .map_err(|e| Failure::internal(format!("the rollout decision did not complete: {e}")))?;
    Ok(match directives {
        Some(d) => Json(d).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn post_report(State(state): State<AppState>, req: Request) -> Result<Response, Failure> {
    let principal = agent(&state, req.headers())?;
    let bytes = body(req, &state, "report", state.max_report_bytes()).await?;
    let report: NodeReport = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::invalid(format!("invalid report: {e}")))?;
    check_node_name(&report.node.name)?;
    principal.may_write(&report.node.name)?;
    let now = state.now();
    let rolling = report.daemonsets.iter().any(|d| !d.rollout.is_empty());
    let (node, instance, sequence) = (
        report.node.name.clone(),
        report.agent_instance.clone(),
        report.sequence,
    );
    // What the report means for each daemonset, computed here (on any core) rather than
    // at each read; and the record's JSON, made outside the store's writer lock.
    let (version, specs) = state.specs_versioned();
    let previous = state.store().entry(&node);
    let previous_facts = previous.as_ref().and_then(|e| e.latest_facts());
    let facts = fleet::node_facts_after(
        specs.values(),
        version,
        &report,
        previous
            .as_ref()
            .zip(previous_facts.as_deref())
            .map(|(e, f)| (&e.record().report, f)),
    );
    drop(previous_facts);
    drop(previous);
    // The record keeps the report as the agent sent it (it parsed, so it reads back the
    // same); only a body that is not UTF-8 as a whole is written out again.
    let report_json = match std::str::from_utf8(&bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text.trim()),
        Err(_) => std::borrow::Cow::Owned(super::store::json(&report)),
    };
    let (outcome, pending) = state
        .store()
        .submit_report(report, &report_json, now, Some(facts))
        .map_err(|e| Failure::internal(e.to_string()))?;
    if let Some(pending) = pending {
        // Answer once the report is committed (grouped with the others under way).
        pending
            .durable()
            .await
            .map_err(|e| Failure::internal(e.to_string()))?;
    }
    match outcome {
        ReportOutcome::Stored { new } => {
            state.counters().report();
            if new {
                tracing::info!(%node, %instance, sequence, "node {node} reported for the first time");
            } else {
                tracing::debug!(%node, %instance, sequence, "report of node {node} stored");
            }
            state.bump_fleet_version();
            if rolling {
                state.rollouts().hint();
            }
            answer_with_directives(&state, node).await
        }
        ReportOutcome::Stale { stored_sequence } => Err(Failure::new(
            StatusCode::CONFLICT,
            Reason::Stale,
            format!(
                "stale report: agent instance \"{instance}\" already reported sequence \
                 {stored_sequence}, this is {sequence}; ignored"
            ),
        )),
    }
}

async fn post_heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, Failure> {
    agent(&state, req.headers())?.may_write(&name)?;
    let bytes = body(req, &state, "heartbeat", SMALL_BODY_LIMIT).await?;
    let hb: Heartbeat = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::invalid(format!("invalid heartbeat: {e}")))?;
    let conflict = |message: String| Failure::new(StatusCode::CONFLICT, Reason::Conflict, message);
    match state.store().heartbeat(&name, &hb, state.now()) {
        HeartbeatOutcome::Alive => {
            state.counters().heartbeat();
            answer_with_directives(&state, name).await
        }
        HeartbeatOutcome::UnknownNode => Err(conflict(format!(
            "node \"{name}\" is unknown: send a full report"
        ))),
        HeartbeatOutcome::Mismatch { instance, sequence } => Err(conflict(format!(
            "node \"{name}\" last reported as agent instance \"{instance}\" sequence {sequence}, \
             not \"{}\" sequence {}: send a full report",
            hb.agent_instance, hb.sequence
        ))),
    }
}

#[derive(serde::Deserialize)]
struct PollQuery {
    #[serde(default)]
    wait: u64,
    #[serde(default)]
    known: String,
}

/// The node's directives; with `wait`, held while they still have the tag `known`.
async fn get_directives(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PollQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    agent(&state, &headers)?.may_write(&name)?;
    let until = tokio::time::Instant::now()
        + Duration::from_secs(q.wait.min(super::rollouts::MAX_POLL_WAIT));
    let mut changes = state.rollouts().subscribe();
    loop {
        changes.borrow_and_update();
        let node = name.clone();
        let d = blocking(&state, move |s| s.directives(&node))
            .await
            .map_err(|e| {
                Failure::internal(format!("the rollout decision did not complete: {e}"))
            })?;
        if d.etag() != q.known || tokio::time::Instant::now() >= until {
            return Ok(Json(d).into_response());
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    revision: Option<u64>,
}

async fn get_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let specs = daemonset(&state, &name)?;
    let current = specs[&name].revision.clone();
    let Some(book) = state.store().spec_book(&name) else {
        return Err(Failure::not_found(format!("no daemonset \"{name}\"")));
    };
    if let Some(n) = q.revision
        && !book.revisions.iter().any(|r| r.number == n)
    {
        return Err(Failure::not_found(format!(
            "no revision {n} of daemonset \"{name}\" is kept"
        )));
    }
    let views: Vec<crate::api::RevisionView> = book
        .revisions
        .iter()
        .map(|r| crate::api::RevisionView {
            number: r.number,
            revision: r.revision.clone(),
            created_at: r.created_at,
            current: r.revision == current,
            file: r.file.clone(),
            commit: r.commit.clone(),
            text: (q.revision == Some(r.number)).then(|| r.text.clone()),
        })
        .collect();
    Ok(Json(views).into_response())
}

/// `pause`, `resume`, `undo`.
async fn post_rollout(
    State(state): State<AppState>,
    Path((name, verb)): Path<(String, String)>,
    req: Request,
) -> Result<Response, Failure> {
    reader(&state, req.headers())?.may_operate()?;
    let bytes = body(req, &state, "request", SMALL_BODY_LIMIT).await?;
    let steer = |e: super::rollouts::SteerError| match e {
        super::rollouts::SteerError::NotFound(_) => Failure::not_found(e.to_string()),
        super::rollouts::SteerError::Invalid(_) => Failure::invalid(e.to_string()),
        super::rollouts::SteerError::Store(_) => Failure::internal(e.to_string()),
    };
    let failed = |e: tokio::task::JoinError| Failure::internal(format!("did not complete: {e}"));
    match verb.as_str() {
        "pause" | "resume" => {
            let paused = verb == "pause";
            let n = name.clone();
            blocking(&state, move |s| s.set_paused(&n, paused))
                .await
                .map_err(failed)?
                .map_err(steer)?;
            tracing::info!(daemonset = %name, "rollout {verb}d");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "undo" => {
            let undo: crate::api::UndoRequest = if bytes.is_empty() {
                Default::default()
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| Failure::invalid(format!("invalid undo request: {e}")))?
            };
            let n = name.clone();
            let (number, revert) = blocking(&state, move |s| s.undo(&n, undo.to_revision))
                .await
                .map_err(failed)?
                .map_err(steer)?;
            tracing::info!(daemonset = %name, revision = number, "rollout undone to revision {number}");
            Ok(
                Json(serde_json::json!({ "revision": number, "revertCommit": revert }))
                    .into_response(),
            )
        }
        other => Err(Failure::not_found(format!(
            "no rollout verb \"{other}\": pause, resume or undo"
        ))),
    }
}

async fn delete_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    agent(&state, &headers)?.may_write(&name)?;
    let deleting = name.clone();
    let deleted = store_write(&state, move |store| store.delete_node(&deleting)).await?;
    if deleted {
        tracing::info!(node = %name, "node {name} deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failure::not_found(format!("no node \"{name}\"")))
    }
}

async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let (now, grace) = (state.now(), state.grace());
    json_off_thread(&state, move |state| {
        let views: Vec<NodeView> = state
            .store()
            .sorted_entries()
            .iter()
            .map(|e| fleet::node_view_at(e.record(), e.last_seen(), now, grace))
            .collect();
        serde_json::to_vec(&views)
    })
    .await
}

/// A JSON answer made by `f` on a blocking thread: the reads whose work grows with the fleet
/// (thousands of nodes) leave the async threads to the agents' reports.
async fn json_off_thread(
    state: &AppState,
    f: impl FnOnce(&AppState) -> serde_json::Result<Vec<u8>> + Send + 'static,
) -> Result<Response, Failure> {
    let body = blocking(state, f)
        .await
        .map_err(|e| Failure::internal(format!("the read did not complete: {e}")))?
        .map_err(|e| Failure::internal(format!("cannot encode the answer: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// `GET /v1/source`: the repository the coordinator follows and the nodes behind its head.
async fn get_source(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    json_off_thread(&state, move |state| {
        let git = state.git().map(|g| g.report.clone());
        let (lagging, current) = match &git {
            Some(g) => {
                let entries = state.store().sorted_entries();
                fleet::lagging(g, entries.iter().map(|e| &e.record().report))
            }
            None => (Vec::new(), 0),
        };
        serde_json::to_vec(&crate::api::SourceView {
            git,
            lagging,
            current,
        })
    })
    .await
}

/// `GET /v1/nodes/{name}`.
#[derive(Debug, Serialize)]
struct NodeDetail {
    node: NodeView,
    report: NodeReport,
}

async fn get_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NodeDetail>, Failure> {
    reader(&state, &headers)?;
    let rec = state
        .store()
        .node(&name)
        .ok_or_else(|| Failure::not_found(format!("no node \"{name}\"")))?;
    Ok(Json(NodeDetail {
        node: fleet::node_view(&rec, state.now(), state.grace()),
        report: rec.report,
    }))
}

/// Every daemonset's view, from the nodes' [`fleet::NodeFacts`]. Blocking (CPU).
fn daemonset_views(state: &AppState, now: u64, grace: u64) -> Vec<crate::api::DaemonSetView> {
    let (version, specs) = state.specs_versioned();
    let specs: Vec<&fleet::SpecRecord> = specs.values().collect();
    // One pass over the entries in place: the facts of each node, computed again only for
    // the nodes whose facts are of older specs.
    state.store().with_entries(|entries| {
        let nodes = entries.map(|e| {
            let facts = e.facts(version, |report| {
                fleet::node_facts(specs.iter().copied(), version, report)
            });
            (facts, e.last_seen())
        });
        fleet::daemonset_views(&specs, nodes, now, grace)
    })
}

async fn list_daemonsets(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let (now, grace) = (state.now(), state.grace());
    json_off_thread(&state, move |state| {
        let mut views = daemonset_views(state, now, grace);
        for v in &mut views {
            v.rollout = state.rollout_view(&v.name);
        }
        serde_json::to_vec(&views)
    })
    .await
}

/// The daemonset `name`, or 404.
fn daemonset(state: &AppState, name: &str) -> Result<Specs, Failure> {
    let specs = state.specs();
    if !specs.contains_key(name) {
        return Err(Failure::not_found(format!("no daemonset \"{name}\"")));
    }
    Ok(specs)
}

async fn get_daemonset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let specs = daemonset(&state, &name)?;
    let (now, grace) = (state.now(), state.grace());
    json_off_thread(&state, move |state| {
        let entries = state.store().entries();
        let mut detail = fleet::daemonset_detail_of(
            &specs[&name],
            entries.iter().map(|e| (e.record(), e.last_seen())),
            now,
            grace,
        );
        detail.daemonset.rollout = state.rollout_view(&name);
        serde_json::to_vec(&detail)
    })
    .await
}

async fn get_endpoints(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let specs = daemonset(&state, &name)?;
    let (now, grace) = (state.now(), state.grace());
    json_off_thread(&state, move |state| {
        let entries = state.store().entries();
        let endpoints = fleet::endpoints_of(
            &specs[&name],
            entries.iter().map(|e| (e.record(), e.last_seen())),
            now,
            grace,
        );
        serde_json::to_vec(&endpoints)
    })
    .await
}

async fn get_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    reader(&state, &headers)?;
    let (now, grace) = (state.now(), state.grace());
    let text = blocking(&state, move |state| {
        let views = daemonset_views(state, now, grace);
        let entries = state.store().sorted_entries();
        let nodes: Vec<metrics::NodeSample<'_>> = entries
            .iter()
            .map(|e| metrics::NodeSample {
                name: &e.record().report.node.name,
                ready: fleet::node_ready_at(e.record(), e.last_seen(), now, grace),
                last_seen: e.last_seen(),
            })
            .collect();
        let mut text = metrics::render_views(&views, &nodes, state.counters());
        if let Some(g) = state.git() {
            let (lagging, current) =
                fleet::lagging(&g.report, entries.iter().map(|e| &e.record().report));
            metrics::render_git(&mut text, &g.report, lagging.len() as u64, current);
        }
        text
    })
    .await
    .map_err(|e| Failure::internal(format!("the read did not complete: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

//! `portcullis lab-service`: one service of the lab's microservice chain. The lab starts N of
//! them as separate processes; the command is hidden from `--help` because nothing else needs it.
//!
//! A user request enters the first service and travels down the chain. Each service
//! authenticates it before anything else, in one of the three designs the lab compares, then
//! passes the same credential to the next service:
//!
//! - `GET /session/chain`: ask Portcullis, `GET /v1/verify` with the request's cookie (design a);
//! - `GET /jwt/chain`: verify the access token here with `portcullis-verify` (design b);
//! - `GET /feed/chain`: the same, with a verifier that follows the revocation feed (design c).
//!
//! `GET /{design}/check` authenticates without passing on: after a logout the lab asks every
//! service in turn, to time the last one still accepting. `GET /healthz` answers 200 once the
//! following verifier has its snapshot (503 before), so the lab measures nothing earlier.
//!
//! It uses `portcullis-verify` as any other service would, and knows Portcullis only by URL.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::get;
use portcullis_verify::Verifier;

#[derive(clap::Args)]
pub struct LabServiceArgs {
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The token issuer (Portcullis' public_url).
    #[arg(long)]
    issuer: String,
    /// Where the key set is read (a node or the balancer).
    #[arg(long)]
    jwks_url: String,
    /// Portcullis' forward-auth endpoint, for the session design.
    #[arg(long)]
    verify_url: String,
    /// The revocation stream the following verifier reads.
    #[arg(long)]
    feed_url: String,
    /// The next service of the chain (its base URL); none for the last.
    #[arg(long)]
    next: Option<String>,
    #[arg(long, env = "PORTCULLIS_CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "PORTCULLIS_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
}

#[derive(Clone)]
struct Hop {
    /// Design (b): local verification alone.
    local: Verifier,
    /// Design (c): local verification, following the revocation feed.
    following: Verifier,
    verify_url: String,
    next: Option<String>,
    http: reqwest::Client,
}

/// Serves until the process is stopped.
pub async fn run(args: LabServiceArgs) -> Result<(), String> {
    let local = Verifier::builder(&args.issuer).jwks_url(&args.jwks_url).build().map_err(|e| e.to_string())?;
    let following = Verifier::builder(&args.issuer)
        .jwks_url(&args.jwks_url)
        .feed_url(&args.feed_url)
        .follow_revocations(args.client_id, args.client_secret)
        .build()
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let hop = Hop { local, following, verify_url: args.verify_url, next: args.next, http };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/{design}/chain", get(chain))
        .route("/{design}/check", get(check))
        .with_state(hop);
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("{}: {e}", args.listen))?;
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

async fn healthz(State(hop): State<Hop>) -> StatusCode {
    if hop.following.feed_state().is_some_and(|f| f.connected) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The header that carries the credential in each design.
fn credential(design: &str) -> Option<header::HeaderName> {
    match design {
        "session" => Some(header::COOKIE),
        "jwt" | "feed" => Some(header::AUTHORIZATION),
        _ => None,
    }
}

/// Authenticates the request in `design`: the credential to pass on, or the status to refuse
/// it with.
async fn authenticate(
    hop: &Hop,
    design: &str,
    headers: &HeaderMap,
) -> Result<(header::HeaderName, HeaderValue), StatusCode> {
    let name = credential(design).ok_or(StatusCode::NOT_FOUND)?;
    let value = headers.get(&name).ok_or(StatusCode::UNAUTHORIZED)?.clone();
    let status = if design == "session" {
        status_of(hop.http.get(&hop.verify_url).header(&name, &value).send().await).await
    } else {
        let verifier = if design == "feed" { &hop.following } else { &hop.local };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if verifier.verify(token).await.is_ok() { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
    };
    if status == StatusCode::OK { Ok((name, value)) } else { Err(status) }
}

async fn check(State(hop): State<Hop>, Path(design): Path<String>, headers: HeaderMap) -> StatusCode {
    authenticate(&hop, &design, &headers).await.map_or_else(|refused| refused, |_| StatusCode::OK)
}

async fn chain(State(hop): State<Hop>, Path(design): Path<String>, headers: HeaderMap) -> StatusCode {
    let (name, value) = match authenticate(&hop, &design, &headers).await {
        Ok(credential) => credential,
        Err(refused) => return refused,
    };
    match &hop.next {
        Some(next) => status_of(hop.http.get(format!("{next}/{design}/chain")).header(name, value).send().await).await,
        None => StatusCode::OK,
    }
}

/// The status of an answer, read to its end so that its connection goes back to the pool.
async fn status_of(answer: reqwest::Result<reqwest::Response>) -> StatusCode {
    match answer {
        Ok(r) => {
            let status = r.status();
            match r.bytes().await {
                Ok(_) => status,
                Err(_) => StatusCode::BAD_GATEWAY,
            }
        }
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

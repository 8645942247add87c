//! A service that trusts Portcullis: it never sees a password or a session, only access
//! tokens, and verifies them on its own with `portcullis-verify`.
//!
//! - `GET /public`: no token needed.
//! - `GET /hello`: any valid token (the [`Claims`] extractor).
//! - `GET /admin/report`: a valid token with the `admin` role (the [`VerifyLayer`] layer).
//! - `GET /healthz`: alive, with the revocation feed's state when the service follows it.
//!
//! It depends on `portcullis-verify` alone, never on the server (its tests start one).

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use portcullis_verify::axum_support::{Claims, VerifyLayer};
use portcullis_verify::{AccessClaims, Verifier};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct AppState {
    pub verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

pub fn app(verifier: Verifier) -> Router {
    let admin = Router::new()
        .route("/admin/report", get(report))
        .layer(VerifyLayer::new(verifier.clone()).require_role("admin"));
    Router::new()
        .route("/public", get(|| async { Json(json!({"message": "anyone can read this"})) }))
        .route("/hello", get(hello))
        .route("/healthz", get(healthz))
        .merge(admin)
        .with_state(AppState { verifier })
}

async fn hello(Claims(claims): Claims) -> Json<Value> {
    Json(json!({
        "message": format!("hello, {}", claims.email),
        "user": claims.sub,
        "roles": claims.roles,
        "session": claims.sid,
    }))
}

/// Alive, and how the revocation feed is doing when the service follows it.
async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let ms = |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let feed = state.verifier.feed_state().map(|f| {
        json!({
            "connected": f.connected,
            "last_event_age_ms": ms(f.last_event_age),
            "lost_for_ms": ms(f.lost_for),
            "revocation_lag_ms": ms(f.last_lag),
        })
    });
    Json(json!({"status": "ok", "revocation_feed": feed}))
}

async fn report(Extension(claims): Extension<AccessClaims>) -> Json<Value> {
    Json(json!({"report": "for admins only", "viewer": claims.email}))
}

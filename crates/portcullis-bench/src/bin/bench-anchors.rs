//! `bench-anchors NAME`: the anchors `portcullis-bench` compares Portcullis with, the smallest
//! axum servers that do what the measured paths do. Prints its port on standard output, then
//! serves until it is killed.
//!
//! A binary of its own so that the anchors run as a plain axum user runs them, on the system
//! allocator, while the bench's Portcullis servers run on the allocator the `portcullis` binary
//! ships with (mimalloc).
//!
//! - `axum`: bare axum 0.8, `GET /healthz` answers `ok`.
//! - `axum-tower-sessions`: axum with tower-sessions 0.14's `MemoryStore`; `GET /login` puts a
//!   user in a new session, `GET /me` reads it back.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

fn bare() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

fn tower_sessions() -> Router {
    async fn login(session: Session) -> StatusCode {
        match session.insert("user", "bench@example.com").await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    async fn me(session: Session) -> Result<String, StatusCode> {
        match session.get::<String>("user").await {
            Ok(Some(user)) => Ok(format!("{{\"user\":\"{user}\"}}")),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }
    let layer = SessionManagerLayer::new(MemoryStore::default()).with_secure(false);
    Router::new().route("/login", get(login)).route("/me", get(me)).layer(layer)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let app = match std::env::args().nth(1).as_deref() {
        Some("axum") => bare(),
        Some("axum-tower-sessions") => tower_sessions(),
        other => {
            eprintln!("usage: bench-anchors axum|axum-tower-sessions (not {other:?})");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        axum::serve(listener, app).await
    };
    match served.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

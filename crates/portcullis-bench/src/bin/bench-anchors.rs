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
//! - `axum-tower-sessions-redis URL`: the same on tower-sessions-redis-store 0.16 (fred), set up
//!   as its documentation shows (a pool of 6 connections).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_sessions::{MemoryStore, Session, SessionManagerLayer, SessionStore};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};

fn bare() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

fn tower_sessions<S: SessionStore + Clone>(store: S) -> Router {
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
    let layer = SessionManagerLayer::new(store).with_secure(false);
    Router::new().route("/login", get(login)).route("/me", get(me)).layer(layer)
}

async fn redis_store(url: &str) -> Result<RedisStore<Pool>, String> {
    let config = Config::from_url(url).map_err(|e| e.to_string())?;
    let pool = Pool::new(config, None, None, None, 6).map_err(|e| e.to_string())?;
    let _connection = pool.connect();
    pool.wait_for_connect().await.map_err(|e| e.to_string())?;
    Ok(RedisStore::new(pool))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let app = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["axum"] => bare(),
        ["axum-tower-sessions"] => tower_sessions(MemoryStore::default()),
        ["axum-tower-sessions-redis", url] => match redis_store(url).await {
            Ok(store) => tower_sessions(store),
            Err(e) => {
                eprintln!("error: redis: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: bench-anchors axum | axum-tower-sessions | axum-tower-sessions-redis URL (not {args:?})");
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

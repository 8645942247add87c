//! Run with `cargo run -p oidc-app -- --client-id ID --client-secret SECRET` after
//! `portcullis client add "Example app" --redirect-uri http://127.0.0.1:3000/callback
//! --post-logout-redirect-uri http://127.0.0.1:3000/`.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "A web application that signs people in through Portcullis (OpenID Connect)")]
struct Args {
    /// Portcullis' public_url (the issuer).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    issuer: String,
    #[arg(long, env = "PORTCULLIS_CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "PORTCULLIS_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where browsers reach this application (its redirect URI is `<public-url>/callback`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    public_url: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let config = oidc_app::Config {
        issuer: args.issuer,
        client_id: args.client_id,
        client_secret: args.client_secret,
        public_url: args.public_url.trim_end_matches('/').to_owned(),
    };
    let app = oidc_app::app(config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("example app on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

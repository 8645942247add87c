//! Run with `cargo run -p protected-service -- --issuer http://127.0.0.1:8080`.

use std::net::SocketAddr;

use clap::Parser;
use portcullis_verify::Verifier;

#[derive(Parser)]
#[command(about = "A service protected by Portcullis access tokens")]
struct Args {
    /// Portcullis' public_url: the token issuer (its JWKS is read from
    /// <issuer>/.well-known/jwks.json).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    issuer: String,
    /// Expected audience (defaults to the issuer, as Portcullis does).
    #[arg(long)]
    audience: Option<String>,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// A service client of Portcullis (`portcullis client add NAME --service`): with it (and
    /// its secret) the service follows the revocation feed and refuses a logged-out token
    /// within milliseconds; without it, a token is accepted until it expires.
    #[arg(long, env = "PORTCULLIS_CLIENT_ID", requires = "client_secret")]
    client_id: Option<String>,
    #[arg(long, env = "PORTCULLIS_CLIENT_SECRET", hide_env_values = true, requires = "client_id")]
    client_secret: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let mut builder = Verifier::builder(&args.issuer);
    if let Some(aud) = args.audience {
        builder = builder.audience(aud);
    }
    let following = match (args.client_id, args.client_secret) {
        (Some(id), Some(secret)) => {
            builder = builder.follow_revocations(id, secret);
            "following its revocation feed"
        }
        _ => "not following revocations: a logged-out token works here until it expires",
    };
    let verifier = builder.build()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "protected-service listening on http://{} (tokens from {}, {following})",
        listener.local_addr()?,
        args.issuer
    );
    axum::serve(listener, protected_service::app(verifier)).await?;
    Ok(())
}

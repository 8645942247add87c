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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let mut builder = Verifier::builder(&args.issuer);
    if let Some(aud) = args.audience {
        builder = builder.audience(aud);
    }
    let verifier = builder.build()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("protected-service listening on http://{} (tokens from {})", listener.local_addr()?, args.issuer);
    axum::serve(listener, protected_service::app(verifier)).await?;
    Ok(())
}

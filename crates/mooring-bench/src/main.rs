//! `mooring-bench`: serves `/plain`, `/read` and `/incr` on 127.0.0.1:`PORT` (see the library docs).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mooring-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = mooring_bench::BenchConfig::from_env()?;
    let app = mooring_bench::app(&config).await?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3005".into());
    let addr = format!("127.0.0.1:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("mooring bench app listening on {addr}");
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

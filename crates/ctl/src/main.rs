use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ultronctl::cli::Cli::parse();
    match ultronctl::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

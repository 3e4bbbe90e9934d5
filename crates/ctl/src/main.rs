use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A command line clap cannot parse exits 2 here, with its message.
    let cli = ultronctl::cli::Cli::parse();
    match ultronctl::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(ultronctl::cli::exit_status(&e))
        }
    }
}

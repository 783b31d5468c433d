//! `ledger`: the ChronicleLedger roles on real infrastructure. Configuration comes from the
//! environment (see `services::config`), defaulting to the local services.

#[cfg(madsim)]
fn main() {
    eprintln!("the ledger binary belongs to the real build: use `cargo run --bin ledger`");
    std::process::exit(2);
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    use std::process::ExitCode;

    use clap::{Parser, Subcommand};
    use services::app::{self, Ledger};
    use services::config::LedgerConfig;
    use tokio::net::TcpListener;

    #[derive(Parser)]
    #[command(name = "ledger", version, about = "ChronicleLedger: event-sourced ledger roles")]
    struct Cli {
        /// Log as JSON lines.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        role: Role,
    }

    #[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
    enum Role {
        /// Command API on LEDGER_API_ADDR.
        Api,
        /// Query API on LEDGER_QUERY_ADDR.
        Query,
        /// Outbox relay to NATS JetStream.
        Relay,
        /// Read processor from NATS JetStream to the read model.
        Processor,
        /// Create the databases where missing and run the migrations.
        Migrate,
        /// Empty the read model and replay the event store into it.
        Rebuild,
        /// Every role in one process (creates databases and schemas first).
        All,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let role = cli.role;
        services::config::run_binary("ledger", cli.json, LedgerConfig::from_env(), move |config| run(role, config))
    }

    async fn run(role: Role, config: LedgerConfig) -> Result<(), app::AppError> {
        if matches!(role, Role::Migrate | Role::All) {
            app::prepare(&config).await?;
            tracing::info!("databases and schemas ready");
            if role == Role::Migrate {
                return Ok(());
            }
        }
        let service = match role {
            Role::Api => "ledger-api",
            Role::Query => "ledger-query",
            Role::Relay => "ledger-relay",
            Role::Processor => "ledger-processor",
            Role::Migrate | Role::Rebuild | Role::All => "ledger",
        };
        let ledger = Ledger::connect_as(config.clone(), service).await?;
        // The roles without an API serve /metrics on METRICS_ADDR, when it is set.
        let metrics = match (role, config.metrics_addr) {
            (Role::Relay | Role::Processor, Some(addr)) => Some(bind(addr).await?),
            _ => None,
        };
        let for_metrics = ledger.clone();
        let serve_metrics = async move {
            match metrics {
                Some(listener) => for_metrics.serve_metrics(listener).await,
                None => std::future::pending().await,
            }
        };
        match role {
            Role::Migrate => unreachable!("handled above"),
            Role::Rebuild => {
                let events = ledger.rebuild().await?;
                println!("rebuilt the read model from {events} events");
                Ok(())
            }
            Role::Api => ledger.serve_api(bind(config.api_addr).await?, false).await,
            Role::Query => ledger.serve_query(bind(config.query_addr).await?, false).await,
            Role::Relay => tokio::select! {
                () = ledger.clone().run_relay() => Ok(()),
                served = serve_metrics => served,
            },
            Role::Processor => tokio::select! {
                () = ledger.clone().run_processor() => Ok(()),
                served = serve_metrics => served,
            },
            Role::All => {
                let api = bind(config.api_addr).await?;
                let query = bind(config.query_addr).await?;
                tracing::info!(api = %config.api_addr, query = %config.query_addr, "ledger: every role running");
                tokio::select! {
                    r = ledger.clone().serve_api(api, true) => r,
                    r = ledger.clone().serve_query(query, true) => r,
                    () = ledger.clone().run_relay() => Ok(()),
                    () = ledger.clone().run_processor() => Ok(()),
                    _ = tokio::signal::ctrl_c() => {
                        tracing::info!("interrupted: stopping");
                        Ok(())
                    }
                }
            }
        }
    }

    async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, app::AppError> {
        Ok(TcpListener::bind(addr).await?)
    }
}

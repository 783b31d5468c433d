//! `orders`: the Flux-Gate roles on real infrastructure. Configuration comes from the
//! environment (see `services::config::OrdersConfig`), defaulting to the local services.

#[cfg(madsim)]
fn main() {
    eprintln!("the orders binary belongs to the real build: use `cargo run --bin orders`");
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
    use services::config::OrdersConfig;
    use services::orders_app::{self, Orders, OrdersError};
    use tokio::net::TcpListener;

    #[derive(Parser)]
    #[command(name = "orders", version, about = "Flux-Gate: flash-sale order system roles")]
    struct Cli {
        /// Log as JSON lines.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        role: Role,
    }

    #[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
    enum Role {
        /// Order API on ORDERS_API_ADDR.
        Api,
        /// Inventory worker: the orders topic to PostgreSQL.
        Worker,
        /// Waiting room on WAITING_ROOM_ADDR.
        WaitingRoom,
        /// Compare Redis with PostgreSQL, report drift, re-initialise Redis where it lost the sale
        /// or offers more than PostgreSQL holds.
        Reconcile {
            /// The sale is quiet (no order in flight): also give back items Redis lost track of.
            #[arg(long)]
            quiet: bool,
        },
        /// Create the database and topic where missing and run the migrations.
        Migrate,
        /// Every role in one process (prepares the database and topic first).
        All,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let role = cli.role;
        services::config::run_binary("orders", cli.json, OrdersConfig::from_env(), move |config| run(role, config))
    }

    async fn run(role: Role, config: OrdersConfig) -> Result<(), OrdersError> {
        if matches!(role, Role::Migrate | Role::All) {
            orders_app::prepare(&config).await?;
            tracing::info!("database, schema and topic ready");
            if role == Role::Migrate {
                return Ok(());
            }
        }
        let service = match role {
            Role::Api => "orders-api",
            Role::WaitingRoom => "waiting-room",
            Role::Worker => "orders-worker",
            _ => "orders",
        };
        let orders = Orders::connect_as(config.clone(), service)?;
        match role {
            Role::Migrate => unreachable!("handled above"),
            Role::Reconcile { quiet } => {
                let report = orders.reconcile(quiet).await?;
                println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
                Ok(())
            }
            Role::Api => orders.serve_api(TcpListener::bind(config.api_addr).await?).await,
            Role::WaitingRoom => orders.serve_waiting_room(TcpListener::bind(config.waiting_room_addr).await?).await,
            // The worker serves no API: /metrics on METRICS_ADDR, when it is set.
            Role::Worker => match config.metrics_addr {
                Some(addr) => {
                    let listener = TcpListener::bind(addr).await?;
                    tokio::select! {
                        () = orders.clone().run_worker() => Ok(()),
                        served = orders.clone().serve_metrics(listener) => served,
                    }
                }
                None => {
                    orders.run_worker().await;
                    Ok(())
                }
            },
            Role::All => {
                let api = TcpListener::bind(config.api_addr).await?;
                let room = TcpListener::bind(config.waiting_room_addr).await?;
                tracing::info!(api = %config.api_addr, waiting_room = %config.waiting_room_addr, "orders: every role running");
                tokio::select! {
                    r = orders.clone().serve_api(api) => r,
                    r = orders.clone().serve_waiting_room(room) => r,
                    () = orders.clone().run_worker() => Ok(()),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
        }
    }
}

//! The processes a real run controls, and how faults reach them: local processes the runner
//! starts itself (killed with SIGKILL, paused with SIGSTOP and SIGCONT), or the containers of a
//! `docker compose` deployment (`kill`, `start`, `pause`, `unpause`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RealError;

/// Longest wait for a started process to accept connections on its port.
pub const START_WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a starting process's port is tried.
pub const START_POLL: Duration = Duration::from_millis(25);
/// Longest a `docker compose` command may take.
pub const COMPOSE_COMMAND_MAX: Duration = Duration::from_secs(60);

/// What a fault does to a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// SIGKILL: the process dies with whatever it had not committed.
    Kill,
    /// Start it again, on the same port and data.
    Start,
    /// SIGSTOP: alive, holding its connections, answering nothing.
    Pause,
    /// SIGCONT.
    Resume,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

/// How to start one role.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The port it listens on, waited for after each start.
    pub port: Option<u16>,
    /// The address it listens on, where not 127.0.0.1 (a role in a network namespace).
    pub host: Option<String>,
}

impl Spec {
    /// A role of a service binary (`ledger api`, `orders worker`, ...) with the deployment's
    /// environment and the role's own settings, logging JSON lines (one per event, failures
    /// with their severity and ids: what an operator's log pipeline ingests).
    pub fn role(
        program: &Path,
        env: &[(String, String)],
        name: &str,
        role: &str,
        own: Vec<(String, String)>,
        port: Option<u16>,
    ) -> Spec {
        Spec {
            name: name.into(),
            program: program.to_path_buf(),
            args: vec!["--json".into(), role.into()],
            env: env.iter().cloned().chain(own).collect(),
            port,
            host: None,
        }
    }
}

struct Proc {
    spec: Spec,
    child: Option<Child>,
    paused: bool,
}

/// Processes the runner started: each logs to `<log_dir>/<name>.log`, all are killed on drop.
pub struct Local {
    procs: Mutex<BTreeMap<String, Proc>>,
    log_dir: PathBuf,
}

impl Local {
    pub fn new(log_dir: &Path) -> Result<Local, RealError> {
        let _ = std::fs::remove_dir_all(log_dir);
        std::fs::create_dir_all(log_dir).map_err(|e| RealError::Setup(format!("{}: {e}", log_dir.display())))?;
        Ok(Local { procs: Mutex::default(), log_dir: log_dir.to_path_buf() })
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Starts a role and waits until it listens.
    pub async fn add(&self, spec: Spec) -> Result<(), RealError> {
        let name = spec.name.clone();
        self.procs.lock().expect("not poisoned").insert(name.clone(), Proc { spec, child: None, paused: false });
        self.act(Action::Start, &name).await
    }

    /// Runs a one-shot command (a migration) to its end.
    pub async fn run_once(&self, spec: Spec) -> Result<(), RealError> {
        let log = self.log_file(&spec.name)?;
        let mut command = command_of(&spec, log)?;
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .map_err(|e| RealError::Setup(e.to_string()))?
            .map_err(|e| RealError::Setup(format!("{}: {e}", spec.program.display())))?;
        if status.success() {
            Ok(())
        } else {
            Err(RealError::Setup(format!("{} failed ({status}): {}", spec.name, self.log_tail(&spec.name))))
        }
    }

    fn log_file(&self, name: &str) -> Result<File, RealError> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .map_err(|e| RealError::Setup(format!("log of {name}: {e}")))
    }

    /// The last lines of a role's log, for an error message.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    pub async fn act(&self, action: Action, name: &str) -> Result<(), RealError> {
        let listen = {
            let mut procs = self.procs.lock().expect("not poisoned");
            let proc = procs.get_mut(name).ok_or_else(|| RealError::Setup(format!("no process named {name}")))?;
            match action {
                Action::Kill => {
                    if let Some(mut child) = proc.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    proc.paused = false;
                    None
                }
                Action::Start => {
                    if proc.child.is_some() {
                        return Ok(());
                    }
                    let log = self.log_file(name)?;
                    let child = command_of(&proc.spec, log)?
                        .spawn()
                        .map_err(|e| RealError::Setup(format!("{} cannot start: {e}", proc.spec.program.display())))?;
                    proc.child = Some(child);
                    proc.spec.port.map(|port| (proc.spec.host.clone().unwrap_or_else(|| "127.0.0.1".into()), port))
                }
                Action::Pause | Action::Resume => {
                    let Some(child) = &proc.child else { return Ok(()) };
                    let signal = if action == Action::Pause { "-STOP" } else { "-CONT" };
                    let status = Command::new("kill")
                        .args([signal, &child.id().to_string()])
                        .status()
                        .map_err(|e| RealError::Setup(format!("kill {signal}: {e}")))?;
                    if !status.success() {
                        return Err(RealError::Setup(format!("kill {signal} {name} failed")));
                    }
                    proc.paused = action == Action::Pause;
                    None
                }
            }
        };
        if let Some((host, port)) = listen {
            self.wait_listening(name, &host, port).await?;
        }
        Ok(())
    }

    async fn wait_listening(&self, name: &str, host: &str, port: u16) -> Result<(), RealError> {
        let deadline = Instant::now() + START_WAIT_MAX;
        loop {
            // Exited first: a port that answers may belong to another process when this one
            // could not bind it.
            let exited = {
                let mut procs = self.procs.lock().expect("not poisoned");
                let proc = procs.get_mut(name).expect("added");
                proc.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
            };
            if let Some(status) = exited {
                return Err(RealError::Setup(format!("{name} exited ({status}): {}", self.log_tail(name))));
            }
            if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
                // Still alive once connected (a process that failed to bind exits at once).
                tokio::time::sleep(START_POLL).await;
                let exited = {
                    let mut procs = self.procs.lock().expect("not poisoned");
                    let proc = procs.get_mut(name).expect("added");
                    proc.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
                };
                return match exited {
                    None => Ok(()),
                    Some(status) => Err(RealError::Setup(format!("{name} exited ({status}): {}", self.log_tail(name)))),
                };
            }
            if Instant::now() >= deadline {
                return Err(RealError::Setup(format!("{name} did not listen on {port}: {}", self.log_tail(name))));
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// Starts HAProxy (Debian's package) in front of `backends` as the role `name`; returns its
    /// URL. Its configuration is written beside the logs.
    pub async fn add_proxy(
        &self,
        haproxy: &Path,
        name: &str,
        backend: &str,
        backends: &[u16],
    ) -> Result<String, RealError> {
        let port = free_port()?;
        let config = self.log_dir.join(format!("{name}.cfg"));
        std::fs::write(&config, haproxy_config(backend, port, backends))
            .map_err(|e| RealError::Setup(format!("{}: {e}", config.display())))?;
        self.add(Spec {
            name: name.into(),
            program: haproxy.to_path_buf(),
            args: vec!["-db".into(), "-f".into(), config.display().to_string()],
            env: vec![],
            port: Some(port),
            host: None,
        })
        .await?;
        Ok(format!("http://127.0.0.1:{port}"))
    }

    /// Resumes what is paused and starts what is stopped.
    pub async fn heal(&self) -> Result<(), RealError> {
        let names: Vec<(String, bool, bool)> = {
            let procs = self.procs.lock().expect("not poisoned");
            procs.iter().map(|(n, p)| (n.clone(), p.child.is_none(), p.paused)).collect()
        };
        for (name, stopped, paused) in names {
            if paused {
                self.act(Action::Resume, &name).await?;
            }
            if stopped {
                self.act(Action::Start, &name).await?;
            }
        }
        Ok(())
    }

    /// Kills every process (resuming the paused first, so they die).
    pub fn shutdown(&self) {
        let mut procs = self.procs.lock().expect("not poisoned");
        for proc in procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                if proc.paused {
                    let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `defaults` of every HAProxy of the project, local and in compose.
pub const HAPROXY_DEFAULTS: &str = "defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  \
     timeout server 5s\n  retries 2\n  option redispatch\n  retry-on conn-failure\n";

/// HAProxy's configuration in front of API instances (each request logged to its log, with
/// the instance, timings and how it ended): round robin, health checks on `/health`
/// every 300 ms (two failures take an instance out, two successes bring it back; an instance
/// that answers 503 because a dependency every instance shares is down stays in, so clients get
/// the service's own answer, not the proxy's), a request
/// retried elsewhere only when it could not be sent (a request an instance took and then died
/// on is answered 502, one it kept too long 504: the client treats both as ambiguous and
/// retries with its idempotency key). `deploy/haproxy/haproxy.cfg` is the same for compose.
pub fn haproxy_config(backend: &str, port: u16, servers: &[u16]) -> String {
    let mut config = format!(
        "global\n  maxconn 4096\n\n{HAPROXY_DEFAULTS}\n\
         frontend {backend}_in\n  bind 127.0.0.1:{port}\n  log stderr format raw local0 info\n  option httplog\n  \
         default_backend {backend}\n\n\
         backend {backend}\n  balance roundrobin\n  option httpchk GET /health\n  \
         http-check expect rstatus ^(200|503)$\n  default-server inter 300ms fall 2 rise 2\n"
    );
    for (i, server) in servers.iter().enumerate() {
        config.push_str(&format!("  server api{} 127.0.0.1:{server} check\n", i + 1));
    }
    config
}

fn command_of(spec: &Spec, log: File) -> Result<Command, RealError> {
    let err = log.try_clone().map_err(|e| RealError::Setup(e.to_string()))?;
    let mut command = Command::new(&spec.program);
    command.args(&spec.args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(err));
    for (k, v) in &spec.env {
        command.env(k, v);
    }
    Ok(command)
}

/// The containers of a `docker compose` deployment.
#[derive(Debug, Clone)]
pub struct Compose {
    /// `docker compose` or `docker-compose`, with `-f FILE`.
    pub program: Vec<String>,
}

impl Compose {
    /// `docker compose -f FILE` when the docker CLI is present, else `docker-compose -f FILE`.
    pub fn new(file: &Path) -> Compose {
        let docker = Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let mut program: Vec<String> =
            if docker { vec!["docker".into(), "compose".into()] } else { vec!["docker-compose".into()] };
        program.extend(["-f".into(), file.display().to_string()]);
        Compose { program }
    }

    /// The compose service that plays a role.
    pub fn service(role: &str) -> &str {
        match role {
            "broker" => "kafka",
            "processor" => "ledger-processor",
            "relay" => "ledger-relay",
            "api-1" | "ledger-api" => "ledger-api-1",
            "api-2" => "ledger-api-2",
            "query" => "ledger-query",
            "worker" => "orders-worker",
            "orders-api" => "orders-api-1",
            "waiting-room" => "waiting-room",
            other => other,
        }
    }

    /// The command line of an action on a role.
    pub fn command(&self, action: Action, role: &str) -> Vec<String> {
        let verb = match action {
            Action::Kill => "kill",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "unpause",
        };
        let mut line = self.program.clone();
        line.extend([verb.to_string(), Self::service(role).to_string()]);
        line
    }

    pub async fn act(&self, action: Action, role: &str) -> Result<(), RealError> {
        let line = self.command(action, role);
        let shown = line.join(" ");
        let mut child = Command::new(&line[0])
            .args(&line[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RealError::Setup(format!("{shown}: {e}")))?;
        let deadline = Instant::now() + COMPOSE_COMMAND_MAX;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(START_POLL).await,
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RealError::Setup(format!("{shown}: no answer in {COMPOSE_COMMAND_MAX:?}")));
                }
                Err(e) => return Err(RealError::Setup(format!("{shown}: {e}"))),
            }
        };
        if status.success() { Ok(()) } else { Err(RealError::Setup(format!("{shown} failed ({status})"))) }
    }
}

/// Where faults go.
pub enum Backend {
    Local(Local),
    Compose(Compose),
}

impl Backend {
    pub async fn act(&self, action: Action, role: &str) -> Result<(), RealError> {
        match self {
            Backend::Local(local) => local.act(action, role).await,
            Backend::Compose(compose) => compose.act(action, role).await,
        }
    }

    /// Undoes every fault still in force.
    pub async fn heal(&self, roles: &[super::FaultTarget]) -> Result<(), RealError> {
        match self {
            Backend::Local(local) => local.heal().await,
            Backend::Compose(compose) => {
                for target in roles {
                    compose.act(Action::Resume, target.role).await.ok();
                    compose.act(Action::Start, target.role).await?;
                }
                Ok(())
            }
        }
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16, RealError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| RealError::Setup(format!("no free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_commands_name_the_services() {
        let compose = Compose { program: vec!["docker".into(), "compose".into(), "-f".into(), "dc.yml".into()] };
        assert_eq!(
            compose.command(Action::Kill, "processor").join(" "),
            "docker compose -f dc.yml kill ledger-processor"
        );
        assert_eq!(compose.command(Action::Pause, "redis").join(" "), "docker compose -f dc.yml pause redis");
        assert_eq!(
            compose.command(Action::Resume, "worker").join(" "),
            "docker compose -f dc.yml unpause orders-worker"
        );
        assert_eq!(compose.command(Action::Start, "broker").join(" "), "docker compose -f dc.yml start kafka");
    }

    #[test]
    fn local_and_compose_haproxy_share_their_defaults() {
        let file =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg")).unwrap();
        assert!(file.contains(HAPROXY_DEFAULTS), "deploy/haproxy/haproxy.cfg lacks:\n{HAPROXY_DEFAULTS}");
        let local = haproxy_config("b", 4000, &[4001, 4002]);
        assert!(local.contains(HAPROXY_DEFAULTS));
        assert!(local.contains("server api2 127.0.0.1:4002 check"), "{local}");
    }

    #[test]
    fn every_role_a_fault_reaches_is_a_compose_service() {
        let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml")).unwrap();
        for role in super::super::FAULT_ROLES {
            let service = Compose::service(role);
            assert!(file.contains(&format!("\n  {service}:\n")), "{role} -> {service} is not in docker-compose.yml");
        }
    }
}

//! The client of `host serve`, in the same binary: `host --server URL
//! --token TOKEN COMMAND` (or `SLUICE_SERVER` and `SLUICE_TOKEN`) pushes
//! modules, submits and operates jobs, reads their logs, events,
//! exceptions and output, and manages tenants and tokens. Tables for
//! people by default, the server's JSON with `-o json`.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and who we are.
#[derive(Args, Clone)]
pub struct Remote {
    /// The server's URL, e.g. `http://127.0.0.1:8470` [env: SLUICE_SERVER]
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// The token to call it with [env: SLUICE_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// The tenant [default: the token's own]
    #[arg(long, global = true, value_name = "NAME")]
    tenant: Option<String>,
    /// Output: `table` for people, `json` for scripts.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_name = "table|json",
        default_value = "table"
    )]
    output: String,
}

/// The commands that talk to a server.
#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Upload a module (a .wasm component); prints its digest.
    Push { file: PathBuf },
    /// List the tenant's modules.
    Modules,
    /// Submit a job: a module (digest or .wasm file) and `host run`'s settings.
    Submit(Box<SubmitArgs>),
    /// List the tenant's jobs.
    List {
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
    },
    /// A job's details.
    Status { job: String },
    /// Cancel a job.
    Cancel { job: String },
    /// Stop a job with a savepoint.
    Stop(OpArgs),
    /// Take a savepoint of a running job.
    Savepoint(OpArgs),
    /// Start a stopped job from a savepoint or its latest checkpoint.
    Start {
        job: String,
        /// The savepoint to start from [default: the latest checkpoint].
        #[arg(long)]
        savepoint: Option<String>,
    },
    /// Rescale a job (stop with a savepoint, restore at the new parallelism).
    Rescale {
        job: String,
        parallelism: u32,
        /// Wait for the operation to end.
        #[arg(long)]
        wait: bool,
    },
    /// Upgrade a job to another module, keeping its state.
    Upgrade {
        job: String,
        /// The new module: a digest or a .wasm file to push first.
        #[arg(long)]
        module: String,
        /// Only report whether the state is compatible and what would change.
        #[arg(long)]
        dry_run: bool,
        /// Wait for the operation to end.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a job that is not running.
    Delete { job: String },
    /// A job's log (`-f` follows it).
    Logs {
        job: String,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// A job's state changes and operations (`-f` follows them).
    Events {
        job: String,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// A job's exceptions (dead letters).
    Exceptions { job: String },
    /// The tail of a job's printed output.
    Output {
        job: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// An operation.
    Operation { id: String },
    /// Tenants (the admin's).
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// The tenant's tokens.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// The tenant's files.
    #[command(subcommand)]
    Files(FileCommand),
}

/// `host submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// The module: its digest, or a .wasm file to push first.
    #[arg(long)]
    module: String,
    /// The job's name.
    #[arg(long)]
    name: Option<String>,
    /// Source URI (`file://` paths are the tenant's files).
    #[arg(long)]
    source: Option<String>,
    /// Sink URI.
    #[arg(long)]
    sink: Option<String>,
    /// Parallelism.
    #[arg(long)]
    parallelism: Option<u32>,
    /// Settings from a TOML file (the keys of `host run --config`).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Any other setting, as in the TOML file: `--set checkpoint-interval=1s`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_param)]
    set: Vec<(String, String)>,
}

/// An operation's job, and whether to wait for it.
#[derive(Args)]
pub struct OpArgs {
    job: String,
    /// Wait for the operation to end.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// List the tenants.
    List,
    /// Create a tenant.
    Create {
        name: String,
        /// A `HOST:PORT` its socket sources may reach (repeatable).
        #[arg(long = "allow-host")]
        allow_host: Vec<String>,
        /// Its quota as JSON (`{"cpu": 0.5, "running-jobs": 4}`).
        #[arg(long)]
        quota: Option<String>,
    },
    /// A tenant's quota and use.
    Quota,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// List the tokens.
    List,
    /// Create a token; it is shown once.
    Create {
        /// viewer, operator, developer or tenant-admin.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Expiry, e.g. `30d`, `12h` [default: never].
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum FileCommand {
    /// List the tenant's files.
    List,
    /// Upload a file.
    Put {
        local: PathBuf,
        path: Option<String>,
    },
    /// Download a file (to stdout without LOCAL).
    Get {
        path: String,
        local: Option<PathBuf>,
    },
    /// Delete a file.
    Delete { path: String },
}

/// A connection to a server.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// What to send.
enum Send<'a> {
    None,
    Json(Value),
    Bytes(&'a [u8]),
}

impl Client {
    fn new(remote: &Remote) -> anyhow::Result<Self> {
        let base = remote
            .server
            .clone()
            .or_else(|| std::env::var("SLUICE_SERVER").ok())
            .ok_or_else(|| anyhow!("pass --server URL (or set SLUICE_SERVER)"))?;
        let token = remote
            .token
            .clone()
            .or_else(|| std::env::var("SLUICE_TOKEN").ok())
            .ok_or_else(|| anyhow!("pass --token TOKEN (or set SLUICE_TOKEN)"))?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build();
        Ok(Client {
            agent: config.into(),
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Send<'_>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, body) => {
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                }
                .header("Authorization", &auth);
                match body {
                    Send::None => req.send_empty(),
                    Send::Json(v) => req.send_json(v),
                    Send::Bytes(b) => req
                        .header("Content-Type", "application/octet-stream")
                        .send(b),
                }
            }
        };
        sent.with_context(|| format!("cannot reach the server at {}", self.base))
    }

    /// Calls the API; the JSON answer, or the problem's detail as an error.
    fn call(&self, method: &str, path: &str, body: Send<'_>) -> anyhow::Result<Value> {
        let mut response = self.send(method, path, body)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let detail = value["detail"]
                .as_str()
                .map_or_else(|| value.to_string(), String::from);
            bail!("{detail} (HTTP {status})");
        }
        Ok(value)
    }

    /// Whose tenant the commands are about.
    fn tenant(&self, remote: &Remote) -> anyhow::Result<String> {
        if let Some(t) = &remote.tenant {
            return Ok(t.clone());
        }
        let me = self.call("GET", "/v1/whoami", Send::None)?;
        me["tenant"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("the admin's token names no tenant: pass --tenant NAME"))
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `value` as JSON, or as a table of `columns` (JSON keys) of the
/// list it is (or of its `list_key`).
fn show(remote: &Remote, value: &Value, list_key: Option<&str>, columns: &[&str]) {
    if remote.output == "json" {
        out!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let list = list_key.map_or(value, |k| &value[k]);
    let items: Vec<&Value> = match list {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|c| s(pointer(item, c))).collect())
        .collect();
    let headers: Vec<&str> = columns
        .iter()
        .map(|c| c.rsplit('/').next().unwrap_or(c))
        .collect();
    print_table(&headers, &rows);
}

fn pointer<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.pointer(&format!("/{path}")).unwrap_or(&NULL)
}

const JOB_COLUMNS: [&str; 7] = [
    "id",
    "name",
    "state",
    "parallelism",
    "metrics/records_in",
    "metrics/lines_out",
    "metrics/restarts",
];

/// Runs a command against the server.
pub fn run(remote: Remote, command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(&remote)?;
    match command {
        RemoteCommand::Tenants(cmd) => return tenants(&client, &remote, cmd),
        RemoteCommand::Push { file } => {
            let digest = push(&client, &remote, &file.display().to_string())?;
            out!("{digest}");
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let tenant = client.tenant(&remote)?;
    let t = format!("/v1/tenants/{tenant}");
    match command {
        RemoteCommand::Modules => {
            let v = client.call("GET", &format!("{t}/modules"), Send::None)?;
            show(&remote, &v, None, &["digest", "size", "wit", "compile-ms"]);
        }
        RemoteCommand::Submit(args) => {
            let body = submit_body(&client, &remote, *args)?;
            let v = client.call("POST", &format!("{t}/jobs"), Send::Json(body))?;
            show(&remote, &v, None, &JOB_COLUMNS);
        }
        RemoteCommand::List { state } => {
            let q = state.map(|s| format!("&state={s}")).unwrap_or_default();
            let v = client.call("GET", &format!("{t}/jobs?limit=100{q}"), Send::None)?;
            show(&remote, &v, Some("jobs"), &JOB_COLUMNS);
        }
        other => jobs(&client, &remote, &t, other)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn jobs(client: &Client, remote: &Remote, t: &str, command: RemoteCommand) -> anyhow::Result<()> {
    let j = |job: &str| format!("{t}/jobs/{job}");
    match command {
        RemoteCommand::Status { job } => {
            let v = client.call("GET", &j(&job), Send::None)?;
            show(
                remote,
                &v,
                None,
                &[
                    "id",
                    "name",
                    "state",
                    "desired",
                    "module",
                    "parallelism",
                    "metrics/records_in",
                    "metrics/lines_out",
                    "metrics/restarts",
                    "last_error",
                    "metrics/last_checkpoint/id",
                ],
            );
        }
        RemoteCommand::Cancel { job } => {
            let v = client.call("POST", &format!("{}/cancel", j(&job)), Send::None)?;
            show(remote, &v, None, &JOB_COLUMNS);
        }
        RemoteCommand::Delete { job } => {
            client.call("DELETE", &j(&job), Send::None)?;
        }
        RemoteCommand::Start { job, savepoint } => {
            let v = client.call(
                "POST",
                &format!("{}/start", j(&job)),
                Send::Json(json!({ "savepoint": savepoint })),
            )?;
            show(remote, &v, None, &JOB_COLUMNS);
        }
        other => ops(client, remote, t, other)?,
    }
    Ok(())
}

fn ops(client: &Client, remote: &Remote, t: &str, command: RemoteCommand) -> anyhow::Result<()> {
    let j = |job: &str| format!("{t}/jobs/{job}");
    match command {
        RemoteCommand::Stop(op) => operation(
            client,
            remote,
            t,
            &format!("{}/stop", j(&op.job)),
            Send::None,
            op.wait,
        )?,
        RemoteCommand::Savepoint(op) => operation(
            client,
            remote,
            t,
            &format!("{}/savepoint", j(&op.job)),
            Send::None,
            op.wait,
        )?,
        RemoteCommand::Rescale {
            job,
            parallelism,
            wait,
        } => {
            operation(
                client,
                remote,
                t,
                &format!("{}/rescale", j(&job)),
                Send::Json(json!({ "parallelism": parallelism })),
                wait,
            )?;
        }
        RemoteCommand::Upgrade {
            job,
            module,
            dry_run,
            wait,
        } => {
            let digest = module_digest(client, remote, &module)?;
            let body = json!({ "module": digest, "dry-run": dry_run });
            if dry_run {
                let v = client.call("POST", &format!("{}/upgrade", j(&job)), Send::Json(body))?;
                upgrade_report(remote, &v);
            } else {
                operation(
                    client,
                    remote,
                    t,
                    &format!("{}/upgrade", j(&job)),
                    Send::Json(body),
                    wait,
                )?;
            }
        }
        RemoteCommand::Operation { id } => {
            let v = client.call("GET", &format!("{t}/operations/{id}"), Send::None)?;
            show(
                remote,
                &v,
                None,
                &["id", "kind", "job", "status", "savepoint", "error"],
            );
        }
        other => streams(client, remote, t, other)?,
    }
    Ok(())
}

fn upgrade_report(remote: &Remote, v: &Value) {
    if remote.output == "json" {
        out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let compatible = v["compatible"].as_bool().unwrap_or(false);
    out!("compatible: {}", if compatible { "yes" } else { "no" });
    for p in v["problems"].as_array().into_iter().flatten() {
        out!("problem: {}", s(p));
    }
    let rows: Vec<Vec<String>> = v["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| vec![s(&c["field"]), s(&c["from"]), s(&c["to"])])
        .collect();
    if !rows.is_empty() {
        print_table(&["setting", "now", "after"], &rows);
    }
}

/// Starts an operation and, with `wait`, polls it to its end.
fn operation(
    client: &Client,
    remote: &Remote,
    t: &str,
    path: &str,
    body: Send<'_>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut op = client.call("POST", path, body)?;
    let id = s(&op["id"]);
    while wait && op["status"] == "running" {
        std::thread::sleep(Duration::from_millis(100));
        op = client.call("GET", &format!("{t}/operations/{id}"), Send::None)?;
    }
    show(
        remote,
        &op,
        None,
        &["id", "kind", "job", "status", "savepoint", "error"],
    );
    if op["status"] == "failed" {
        bail!("operation `{id}` failed: {}", s(&op["error"]));
    }
    Ok(())
}

fn streams(
    client: &Client,
    remote: &Remote,
    t: &str,
    command: RemoteCommand,
) -> anyhow::Result<()> {
    match command {
        RemoteCommand::Logs { job, follow } => {
            feed(client, remote, &format!("{t}/jobs/{job}/logs"), follow)
        }
        RemoteCommand::Events { job, follow } => {
            feed(client, remote, &format!("{t}/jobs/{job}/events"), follow)
        }
        RemoteCommand::Exceptions { job } => {
            let v = client.call("GET", &format!("{t}/jobs/{job}/exceptions"), Send::None)?;
            show(
                remote,
                &v,
                None,
                &["record", "input", "key", "fault", "message"],
            );
            Ok(())
        }
        RemoteCommand::Output { job, lines } => {
            let v = client.call(
                "GET",
                &format!("{t}/jobs/{job}/output?lines={lines}"),
                Send::None,
            )?;
            if remote.output == "json" {
                out!("{v}");
            } else {
                for line in v.as_array().into_iter().flatten() {
                    out!("{}", s(line));
                }
            }
            Ok(())
        }
        RemoteCommand::Tokens(cmd) => tokens(client, remote, t, cmd),
        RemoteCommand::Files(cmd) => files(client, remote, t, cmd),
        _ => Ok(()),
    }
}

fn print_event(remote: &Remote, e: &Value) {
    if remote.output == "json" {
        out!("{e}");
        return;
    }
    let what = e["state"].as_str().or(e["level"].as_str()).unwrap_or("");
    out!("{} {:<10} {}", s(&e["time-ms"]), what, s(&e["message"]));
}

/// Prints a job's events or logs; with `follow`, keeps reading the
/// server-sent events as they come.
fn feed(client: &Client, remote: &Remote, path: &str, follow: bool) -> anyhow::Result<()> {
    if !follow {
        let v = client.call("GET", path, Send::None)?;
        for e in v.as_array().into_iter().flatten() {
            print_event(remote, e);
        }
        return Ok(());
    }
    let response = client.send("GET", &format!("{path}?follow=true"), Send::None)?;
    if response.status().as_u16() >= 400 {
        let v = client.call("GET", path, Send::None);
        return v.map(drop);
    }
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    for line in reader.lines() {
        let line = line.context("the server closed the stream")?;
        if let Some(data) = line.strip_prefix("data:") {
            let e: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            print_event(remote, &e);
        }
    }
    Ok(())
}

fn tenants(client: &Client, remote: &Remote, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::List => {
            let v = client.call("GET", "/v1/tenants", Send::None)?;
            show(
                remote,
                &v,
                None,
                &[
                    "name",
                    "quota/running-jobs",
                    "quota/parallelism",
                    "quota/cpu",
                    "allowed-hosts",
                ],
            );
        }
        TenantCommand::Create {
            name,
            allow_host,
            quota,
        } => {
            let quota: Option<Value> = quota
                .map(|q| serde_json::from_str(&q))
                .transpose()
                .context("--quota is not JSON")?;
            let body = json!({ "name": name, "allowed-hosts": allow_host, "quota": quota });
            let v = client.call("POST", "/v1/tenants", Send::Json(body))?;
            show(
                remote,
                &v,
                None,
                &[
                    "name",
                    "quota/running-jobs",
                    "quota/parallelism",
                    "quota/cpu",
                    "allowed-hosts",
                ],
            );
        }
        TenantCommand::Quota => {
            let tenant = client.tenant(remote)?;
            let v = client.call("GET", &format!("/v1/tenants/{tenant}/quota"), Send::None)?;
            if remote.output == "json" {
                out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let rows: Vec<Vec<String>> = v["quota"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, limit)| vec![k.clone(), s(limit), s(&v["usage"][k])])
                    .collect();
                print_table(&["resource", "limit", "use"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tokens(client: &Client, remote: &Remote, t: &str, cmd: TokenCommand) -> anyhow::Result<()> {
    let columns = ["id", "name", "role", "expires-ms", "revoked"];
    match cmd {
        TokenCommand::List => show(
            remote,
            &client.call("GET", &format!("{t}/tokens"), Send::None)?,
            None,
            &columns,
        ),
        TokenCommand::Create {
            role,
            name,
            expires_in,
        } => {
            let expires = expires_in.map(|e| parse_expiry(&e)).transpose()?;
            let body = json!({ "name": name, "role": role, "expires-in-s": expires });
            let v = client.call("POST", &format!("{t}/tokens"), Send::Json(body))?;
            show(remote, &v, None, &["id", "name", "role", "token"]);
        }
        TokenCommand::Revoke { id } => show(
            remote,
            &client.call("DELETE", &format!("{t}/tokens/{id}"), Send::None)?,
            None,
            &columns,
        ),
    }
    Ok(())
}

/// `30d`, `12h`, `90m`, `45s`: seconds.
fn parse_expiry(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("--expires-in `{s}` is not like `30d`, `12h`, `90m` or `45s`"))?;
    let per = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => bail!("--expires-in `{s}` is not like `30d`, `12h`, `90m` or `45s`"),
    };
    Ok(n * per)
}

fn files(client: &Client, remote: &Remote, t: &str, cmd: FileCommand) -> anyhow::Result<()> {
    match cmd {
        FileCommand::List => show(
            remote,
            &client.call("GET", &format!("{t}/files"), Send::None)?,
            None,
            &["path", "size"],
        ),
        FileCommand::Put { local, path } => {
            let bytes = std::fs::read(&local)
                .with_context(|| format!("cannot read `{}`", local.display()))?;
            let name = path.unwrap_or_else(|| {
                local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            client.call("PUT", &format!("{t}/files/{name}"), Send::Bytes(&bytes))?;
        }
        FileCommand::Get { path, local } => {
            let mut response = client.send("GET", &format!("{t}/files/{path}"), Send::None)?;
            if response.status().as_u16() >= 400 {
                return client
                    .call("GET", &format!("{t}/files/{path}"), Send::None)
                    .map(drop);
            }
            let mut bytes = Vec::new();
            response.body_mut().as_reader().read_to_end(&mut bytes)?;
            match local {
                Some(p) => std::fs::write(&p, bytes)
                    .with_context(|| format!("cannot write `{}`", p.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
        }
        FileCommand::Delete { path } => {
            client.call("DELETE", &format!("{t}/files/{path}"), Send::None)?;
        }
    }
    Ok(())
}

/// Uploads a module file; its digest.
fn push(client: &Client, remote: &Remote, file: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read module `{file}`"))?;
    let tenant = client.tenant(remote)?;
    let v = client.call(
        "POST",
        &format!("/v1/tenants/{tenant}/modules"),
        Send::Bytes(&bytes),
    )?;
    Ok(s(&v["digest"]))
}

/// A digest as given, or the digest of a module file pushed first.
fn module_digest(client: &Client, remote: &Remote, module: &str) -> anyhow::Result<String> {
    if module.len() == 64 && module.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(module.to_string());
    }
    push(client, remote, module)
}

fn submit_body(client: &Client, remote: &Remote, args: SubmitArgs) -> anyhow::Result<Value> {
    let mut settings = serde_json::Map::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("`{}` is not valid TOML", path.display()))?;
        let v = serde_json::to_value(table)?;
        settings.extend(v.as_object().cloned().unwrap_or_default());
    }
    for (k, v) in [
        ("name", args.name),
        ("source", args.source),
        ("sink", args.sink),
    ] {
        if let Some(v) = v {
            settings.insert(k.into(), Value::String(v));
        }
    }
    if let Some(p) = args.parallelism {
        settings.insert("parallelism".into(), json!(p));
    }
    for (k, v) in args.set {
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        settings.insert(k, value);
    }
    let module = module_digest(client, remote, &args.module)?;
    Ok(json!({ "module": module, "settings": settings }))
}

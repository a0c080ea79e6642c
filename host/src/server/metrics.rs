//! `/metrics` in Prometheus text, encoded by `prometheus-client` from what
//! the server knows at the moment of the scrape: every series of a job
//! comes from the job itself, so a deleted job's series are gone at the
//! next scrape. Series carry `tenant` and `job` labels; a tenant's token is
//! shown its own tenant's series only, the admin's every series and the
//! server's own (API requests by route and status, refused tokens).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::job::JobMetrics;
use crate::server::quotas::{Quota, Usage};
use crate::server::state::AppState;

type Labels = Vec<(&'static str, String)>;

/// A family of series to encode.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    series: Vec<(Labels, f64)>,
}

impl Family {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, value) in &self.series {
            let family = metric.encode_family(labels)?;
            if self.counter {
                ConstCounter::new(*value).encode(family)?;
            } else {
                ConstGauge::new(*value).encode(family)?;
            }
        }
        Ok(())
    }
}

/// Every family a scrape shows, filled from the server's state.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        counter: bool,
        labels: Labels,
        value: f64,
    ) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.series.push((labels, value)),
            None => self.0.push(Family {
                name,
                help,
                counter,
                series: vec![(labels, value)],
            }),
        }
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            f.encode(&mut encoder)?;
        }
        Ok(())
    }
}

const JOB_STATES: [&str; 8] = [
    "CREATED",
    "RUNNING",
    "FAILING",
    "RESTARTING",
    "FINISHED",
    "FAILED",
    "CANCELED",
    "STOPPED",
];

fn state_series(out: &mut Families, labels: &Labels, state: &str) {
    for s in JOB_STATES {
        let mut l = labels.clone();
        l.push(("state", s.to_string()));
        out.push(
            "sluice_job_state",
            "1 for the job's current state",
            false,
            l,
            f64::from(u8::from(s == state)),
        );
    }
}

/// The families of one job's series.
fn job_series(
    out: &mut Families,
    labels: &Labels,
    m: &JobMetrics,
    dead: &crate::server::jobs::DeadLetters,
) {
    out.push(
        "sluice_job_uptime_seconds",
        "time since the job's last start",
        false,
        labels.clone(),
        m.uptime_ms as f64 / 1000.0,
    );
    out.push(
        "sluice_job_restarts",
        "restarts of the job's tasks",
        true,
        labels.clone(),
        m.restarts as f64,
    );
    out.push(
        "sluice_job_records_in",
        "records read from the source",
        true,
        labels.clone(),
        m.records_in as f64,
    );
    out.push(
        "sluice_job_records_out",
        "lines written to the sink",
        true,
        labels.clone(),
        m.lines_out as f64,
    );
    let last_stage = m.subtasks.iter().map(|s| s.stage).max().unwrap_or(0);
    let bytes_out: u64 = m
        .subtasks
        .iter()
        .filter(|s| s.stage == last_stage)
        .map(|s| s.bytes_out)
        .sum();
    out.push(
        "sluice_job_bytes_out",
        "bytes of output rows",
        true,
        labels.clone(),
        bytes_out as f64,
    );
    let guest = m.subtasks.iter().filter(|s| s.stage == 0);
    let (calls, busy) = guest.fold((0, 0), |(c, b), s| (c + s.batches, b + s.busy_ms));
    out.push(
        "sluice_job_guest_calls",
        "guest calls (batches)",
        true,
        labels.clone(),
        calls as f64,
    );
    out.push(
        "sluice_job_guest_busy_seconds",
        "time spent in the guest's stage",
        true,
        labels.clone(),
        busy as f64 / 1000.0,
    );
    dead_series(out, labels, dead);
    checkpoint_series(out, labels, m);
}

/// The dead letters' series.
fn dead_series(out: &mut Families, labels: &Labels, dead: &crate::server::jobs::DeadLetters) {
    for (kind, n) in &dead.by_fault {
        let mut l = labels.clone();
        l.push(("kind", kind.clone()));
        out.push(
            "sluice_job_record_errors",
            "records failed (dead-lettered), by whose fault",
            true,
            l,
            *n as f64,
        );
    }
    for (cause, n) in &dead.by_cause {
        let mut l = labels.clone();
        l.push(("cause", cause.clone()));
        out.push(
            "sluice_job_traps",
            "guest faults pinned to a record, by cause",
            true,
            l,
            *n as f64,
        );
    }
}

/// The last checkpoint's series.
fn checkpoint_series(out: &mut Families, labels: &Labels, m: &JobMetrics) {
    if let Some(c) = &m.last_checkpoint {
        let age = crate::server::disk::now_ms().saturating_sub(c.created_at_ms) as f64 / 1000.0;
        out.push(
            "sluice_job_checkpoint_duration_seconds",
            "time to write the last checkpoint",
            false,
            labels.clone(),
            c.duration_ms as f64 / 1000.0,
        );
        out.push(
            "sluice_job_checkpoint_size_bytes",
            "state bytes in the last checkpoint",
            false,
            labels.clone(),
            c.bytes as f64,
        );
        out.push(
            "sluice_job_checkpoint_age_seconds",
            "time since the last checkpoint",
            false,
            labels.clone(),
            age,
        );
        out.push(
            "sluice_job_state_keys",
            "keys of keyed state at the last checkpoint",
            false,
            labels.clone(),
            c.keys as f64,
        );
        out.push(
            "sluice_job_state_bytes",
            "bytes of keyed state at the last checkpoint",
            false,
            labels.clone(),
            c.bytes as f64,
        );
    }
}

fn quota_series(out: &mut Families, tenant: &str, quota: &Quota, usage: &Usage) {
    let pairs: [(&str, f64, f64); 8] = [
        (
            "running-jobs",
            quota.running_jobs as f64,
            usage.running_jobs as f64,
        ),
        (
            "parallelism",
            quota.parallelism as f64,
            usage.parallelism as f64,
        ),
        ("memory", quota.memory as f64, usage.memory as f64),
        (
            "state-memory",
            quota.state_memory as f64,
            usage.state_memory as f64,
        ),
        ("storage", quota.storage as f64, usage.storage as f64),
        ("modules", quota.modules as f64, usage.modules as f64),
        ("module-size", quota.module_size as f64, 0.0),
        ("cpu", quota.cpu, 0.0),
    ];
    for (resource, limit, used) in pairs {
        let l = vec![
            ("tenant", tenant.to_string()),
            ("resource", resource.to_string()),
        ];
        out.push(
            "sluice_tenant_quota_limit",
            "a tenant's quota, by resource",
            false,
            l.clone(),
            limit,
        );
        if resource != "module-size" && resource != "cpu" {
            out.push(
                "sluice_tenant_quota_use",
                "what a tenant uses, by resource",
                false,
                l,
                used,
            );
        }
    }
    let l = vec![("tenant", tenant.to_string())];
    out.push(
        "sluice_tenant_cpu_seconds",
        "CPU time used by the tenant's guests",
        true,
        l.clone(),
        usage.cpu_seconds,
    );
    out.push(
        "sluice_tenant_cpu_throttled_seconds",
        "time the tenant's guests waited for being over their CPU share",
        true,
        l,
        usage.cpu_throttled_seconds,
    );
}

fn server_series(out: &mut Families, state: &AppState) {
    let requests = state
        .stats
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for ((route, status), n) in requests {
        let l = vec![("route", route), ("status", status.to_string())];
        out.push(
            "sluice_api_requests",
            "API requests, by route and status",
            true,
            l,
            n as f64,
        );
    }
    let failures = state
        .stats
        .auth_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (reason, n) in failures {
        out.push(
            "sluice_auth_failures",
            "refused tokens, by reason",
            true,
            vec![("reason", reason.to_string())],
            n as f64,
        );
    }
    let refused = state
        .stats
        .refused_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    out.push(
        "sluice_connections_refused",
        "connections closed at once for being over --max-connections",
        true,
        vec![],
        refused as f64,
    );
}

/// The metrics `tenant` may see (every tenant's and the server's for the
/// admin, `None`), in Prometheus text.
pub fn render(state: &AppState, tenant: Option<&str>) -> String {
    let mut out = Families::default();
    if tenant.is_none() {
        server_series(&mut out, state);
    }
    for t in state
        .tenants
        .all()
        .iter()
        .filter(|t| tenant.is_none_or(|want| t.name == want))
    {
        quota_series(&mut out, &t.name, &t.record().quota, &state.jobs.usage(t));
        for job in state.jobs.list(Some(&t.name)) {
            let labels = vec![("tenant", t.name.clone()), ("job", job.id.clone())];
            state_series(&mut out, &labels, job.state());
            let Some(m) = job.metrics() else {
                continue;
            };
            let dead = job.dead.lock().unwrap_or_else(|p| p.into_inner()).clone();
            job_series(&mut out, &labels, &m, &dead);
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(out));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}

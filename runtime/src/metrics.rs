use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

/// The daemon's Prometheus registry and the metrics the runtime itself maintains.
///
/// Clones share the registry; daemons add their own metrics through [`Metrics::new_with`].
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    watch_events: Family<WatchEventLabels, Counter>,
    watch_errors: Family<WatchLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchEventLabels {
    resource: String,
    event: String,
}

impl Metrics {
    /// The runtime's metrics for `component` (`controller`, `speaker`).
    pub fn new(component: &str) -> Self {
        Self::new_with(component, |_| {})
    }

    /// Like [`Metrics::new`], letting the daemon register its own metrics under `ferrolb_`.
    pub fn new_with(component: &str, register: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        // Process metrics keep their conventional unprefixed names so stock dashboards work.
        registry.register_collector(Box::new(ProcessCollector::new()));

        let ours = registry.sub_registry_with_prefix("ferrolb");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                component: component.to_owned(),
                version: crate::VERSION.to_owned(),
            })
            .set(1);
        ours.register(
            "build_info",
            "Always 1; labels say which component and version is running",
            build_info,
        );
        let watch_events = Family::<WatchEventLabels, Counter>::default();
        ours.register(
            "watch_events",
            "Watch events received, by resource and event kind (init marks a re-list)",
            watch_events.clone(),
        );
        let watch_errors = Family::<WatchLabels, Counter>::default();
        ours.register(
            "watch_errors",
            "Watch failures, each followed by a backed-off reconnect",
            watch_errors.clone(),
        );
        register(ours);

        Self {
            registry: Arc::new(registry),
            watch_events,
            watch_errors,
        }
    }

    /// Counts one watch event of `event` kind for `resource`.
    pub fn watch_event(&self, resource: &str, event: &str) {
        self.watch_events
            .get_or_create(&WatchEventLabels {
                resource: resource.to_owned(),
                event: event.to_owned(),
            })
            .inc();
    }

    /// Counts one watch failure for `resource`.
    pub fn watch_error(&self, resource: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads `/proc/self` on each scrape: a few small files, cheaper than a background sampler.
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: Option<f64>,
}

impl ProcessCollector {
    fn new() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let start_time_seconds = match (stat, boot) {
            (Some(stat), Some(boot)) => parse_stat(&stat)
                .zip(parse_boot_time(&boot))
                .map(|(s, btime)| btime as f64 + s.start_ticks as f64 / USER_HZ),
            _ => None,
        };
        Self { start_time_seconds }
    }
}

// /proc reports times in USER_HZ, which the kernel fixes at 100 for user space on every
// architecture we build for; asking sysconf would need libc and `unsafe`.
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            let cpu = ConstCounter::new((stat.utime_ticks + stat.stime_ticks) as f64 / USER_HZ);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process",
                stat.threads as f64,
            )?;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kb) = status_kb(&status, "VmRSS:") {
                gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    (kb * 1024) as f64,
                )?;
            }
            if let Some(kb) = status_kb(&status, "VmSize:") {
                gauge(
                    &mut encoder,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    (kb * 1024) as f64,
                )?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                fds.count() as f64,
            )?;
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(parse_max_open_files)
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        if let Some(start) = self.start_time_seconds {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            )?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

#[derive(Debug, PartialEq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
}

/// Parses `/proc/self/stat`; the command name may hold spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 of proc(5) (state), so field N is at N - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
    })
}

fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let line = "4242 (ferrolb (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 \
                    7 0 123456 100000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime_ticks: 250,
                stime_ticks: 75,
                threads: 7,
                start_ticks: 123456,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_and_limits() {
        let status = "Name:\tferrolb\nVmSize:\t  123456 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kb(status, "VmSize:"), Some(123456));
        assert_eq!(status_kb(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1700000000)
        );
    }

    #[test]
    fn exposition_has_build_info_watch_and_process_metrics() {
        let m = Metrics::new("controller");
        m.watch_event("services", "apply");
        m.watch_error("services");
        let text = m.encode().unwrap();
        let build = format!(
            "ferrolb_build_info{{component=\"controller\",version=\"{}\"}} 1",
            crate::VERSION
        );
        assert!(text.contains(&build), "{text}");
        assert!(
            text.contains("ferrolb_watch_events_total{resource=\"services\",event=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferrolb_watch_errors_total{resource=\"services\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

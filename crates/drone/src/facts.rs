//! Host facts (sent at registration) and stats (sent with each heartbeat),
//! from sysinfo.

use std::collections::BTreeMap;
use std::path::Path;

use sysinfo::{Disks, System};
use ultron8_core::{DroneFacts, HostStats};

pub fn collect_facts(labels: BTreeMap<String, String>) -> DroneFacts {
    let mut system = System::new();
    system.refresh_memory();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    DroneFacts {
        hostname: System::host_name().unwrap_or_default(),
        os: System::name().unwrap_or_else(|| std::env::consts::OS.to_string()),
        os_version: System::os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpus: system.cpus().len() as u32,
        memory_bytes: system.total_memory(),
        labels,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Keeps the sysinfo state between samples: CPU usage is the difference
/// between two refreshes, so the first sample after start reads zero.
pub struct StatsSampler {
    system: System,
    disks: Disks,
}

impl StatsSampler {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        StatsSampler {
            system,
            disks: Disks::new_with_refreshed_list(),
        }
    }

    pub fn sample(&mut self) -> HostStats {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        let load = System::load_average();
        let memory_percent = percent(self.system.used_memory(), self.system.total_memory());
        HostStats {
            cpu_percent: self.system.global_cpu_usage(),
            memory_percent,
            disk_percent: self.root_disk_percent(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            uptime_seconds: System::uptime(),
            collected_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Usage of the file system holding `/`, the one whose filling up
    /// takes a host down.
    fn root_disk_percent(&self) -> f32 {
        self.disks
            .list()
            .iter()
            .find(|disk| disk.mount_point() == Path::new("/"))
            .map(|disk| {
                percent(
                    disk.total_space() - disk.available_space(),
                    disk.total_space(),
                )
            })
            .unwrap_or(0.0)
    }
}

impl Default for StatsSampler {
    fn default() -> Self {
        StatsSampler::new()
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64) as f32
    }
}

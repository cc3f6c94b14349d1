//! What the kernel says about a server process: resident memory, CPU time and context
//! switches (the wakeups an idle process causes), read from `/proc`.

use std::time::Duration;

use anyhow::Context;

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    /// Resident set size, bytes.
    pub rss: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// The kernel's part of `cpu` (on loopback it includes the receiving side's TCP work,
    /// which the kernel does in the sender's context).
    pub system: Duration,
    /// Voluntary and involuntary context switches of every thread.
    pub switches: u64,
}

impl ProcStat {
    pub fn read(pid: u32) -> anyhow::Result<ProcStat> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
        let rss = field(&status, "VmRSS:").context("VmRSS missing")? * 1024;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc stat")?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field_ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
        let cpu = seconds(field_ticks(11) + field_ticks(12));
        let system = seconds(field_ticks(12));
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                switches += field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
                    + field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            }
        }
        Ok(ProcStat { rss, cpu, system, switches })
    }
}

impl ProcStat {
    /// A process and its children together (nginx's master and workers).
    pub fn read_tree(pid: u32) -> anyhow::Result<ProcStat> {
        let mut total = ProcStat::read(pid)?;
        for child in children(pid) {
            if let Ok(stat) = ProcStat::read(child) {
                total.rss += stat.rss;
                total.cpu += stat.cpu;
                total.system += stat.system;
                total.switches += stat.switches;
            }
        }
        Ok(total)
    }
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
                ppid == Some(parent)
            })
        })
        .collect()
}

fn field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on every Linux this runs on.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

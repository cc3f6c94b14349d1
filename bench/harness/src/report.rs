//! The report: the machine, the command, then every table. Written between two markers in
//! BENCHMARKS.md so the hand-written parts around it (the optimisation log) stay.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::table::Table;

const BEGIN: &str = "<!-- bench/run: generated from here -->";
const END: &str = "<!-- bench/run: generated up to here -->";

pub fn render(tables: &[Table], command: &str, repetitions: usize, smoke: bool) -> String {
    let mut out = String::new();
    if smoke {
        out += "**Smoke run: tiny sizes that only show the harness works; these figures mean nothing.**\n\n";
    }
    out += &format!("Command: `{command}` on {}.\n\n", today());
    out += &format!("Machine: {}.\n\n", machine());
    out += &format!("Software: {}.\n\n", versions());
    out += &format!(
        "Each figure is the median of {repetitions} runs; servers take turns within each run (A/B interleaved), \
         each started fresh. Ratios are Tally's median over the peer's: below 1.0x is better for time, CPU and \
         memory, above 1.0x for throughput.\n\n"
    );
    for table in tables {
        out += &table.markdown();
        out += "\n";
    }
    out
}

/// Puts `report` between the markers of `path`, or creates the file around it.
pub fn write(path: &Path, report: &str) -> anyhow::Result<()> {
    let generated = format!("{BEGIN}\n\n{report}\n{END}");
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{generated}{}", &existing[..begin], &existing[end + END.len()..])
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{generated}\n"),
        _ => format!("{}\n\n{generated}\n", existing.trim_end()),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn today() -> String {
    output("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "an unknown date".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let kernel = output("uname", &["-r"]).unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} RAM, {} Linux {kernel}", std::env::consts::ARCH)
}

fn versions() -> String {
    let mut parts = Vec::new();
    if let Some(rustc) = output("rustc", &["--version"]) {
        parts.push(rustc);
    }
    if let Some(node) = output("node", &["--version"]) {
        parts.push(format!("Node.js {node}"));
    }
    if let Some(gst) = output("gst-launch-1.0", &["--version"]).and_then(|v| v.lines().nth(1).map(str::to_owned)) {
        parts.push(gst);
    }
    if let Some(ffmpeg) = output("ffmpeg", &["-version"]).and_then(|v| v.lines().next().map(str::to_owned)) {
        parts.push(ffmpeg.split(" Copyright").next().unwrap_or(&ffmpeg).to_owned());
    }
    if let Some(nginx) = output_stderr("/usr/sbin/nginx", &["-v"]) {
        parts.push(nginx.trim_start_matches("nginx version: ").to_owned());
    }
    parts.join(", ")
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn output_stderr(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

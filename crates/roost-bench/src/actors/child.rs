//! Measurement points in fresh child processes: the parent re-executes this binary as the hidden
//! `roost bench actors child --task JSON`; the child runs the task, prints its result as one JSON
//! line on stdout (progress goes to stderr) and exits, so every point starts from a clean process
//! and its peak RSS (VmHWM) is its own.

use std::process::{Command, Stdio};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{memory, storm, BenchResult};

/// One measurement point.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    Memory(memory::PointTask),
    StormSetup(storm::SetupTask),
    StormPass(storm::PassTask),
}

/// Runs `task` in a child process and parses the JSON line it prints.
pub fn run<T: DeserializeOwned>(task: &Task) -> BenchResult<T> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let spec = serde_json::to_string(task)?;
    let output = Command::new(exe)
        .args(["bench", "actors", "child", "--task", &spec])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start a child process: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("child process for {spec} failed ({}); stdout: {stdout}", output.status).into());
    }
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    Ok(serde_json::from_str(line).map_err(|e| format!("child answered {line:?}: {e}"))?)
}

/// The child's side: runs the task and prints its result.
pub fn serve(spec: &str) -> BenchResult<()> {
    let task: Task = serde_json::from_str(spec).map_err(|e| format!("bad child task {spec:?}: {e}"))?;
    let line = match task {
        Task::Memory(task) => serde_json::to_string(&memory::measure_point(&task)?)?,
        Task::StormSetup(task) => serde_json::to_string(&storm::setup(&task)?)?,
        Task::StormPass(task) => serde_json::to_string(&storm::pass(&task)?)?,
    };
    println!("{line}");
    Ok(())
}

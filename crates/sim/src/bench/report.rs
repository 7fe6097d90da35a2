//! A benchmark report: what ran, on what, the figures, the budgets met or not, and notes.

use super::BenchArgs;
use crate::stats::Percentiles;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub note: String,
}

/// One measured figure: a throughput, a latency distribution, or both.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    /// Operations per second, if this is a rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Percentiles>,
    /// Anything else worth keeping (counts, sizes, ratios).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub extra: Value,
}

impl Measurement {
    pub fn rate(name: impl Into<String>, per_second: f64, latency: Option<Percentiles>) -> Self {
        Measurement { name: name.into(), per_second: Some(per_second), latency, extra: Value::Null }
    }
    pub fn latency(name: impl Into<String>, latency: Percentiles) -> Self {
        Measurement { name: name.into(), per_second: None, latency: Some(latency), extra: Value::Null }
    }
    pub fn value(name: impl Into<String>, extra: Value) -> Self {
        Measurement { name: name.into(), per_second: None, latency: None, extra }
    }
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }
}

/// A budget from DESIGN.md and what this run measured against it.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    pub budget: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub measurements: Vec<Measurement>,
    pub budgets: Vec<Budget>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(args: &BenchArgs) -> Report {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let scenario = format!("{:?}", args.scenario);
        let scenario =
            clap::ValueEnum::to_possible_value(&args.scenario).map(|v| v.get_name().to_owned()).unwrap_or(scenario);
        Report {
            scenario,
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine {
                cores,
                note: format!(
                    "client and server share this machine's {cores} cores, so every figure is a lower bound \
                     for a server with the machine to itself"
                ),
            },
            measurements: Vec::new(),
            budgets: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add(&mut self, m: Measurement) {
        println!("  {}", line(&m));
        self.measurements.push(m);
    }

    pub fn budget(&mut self, budget: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.budgets.push(Budget { budget: budget.into(), measured: measured.into(), met });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        println!(
            "\n== lastmile bench {} ({}, {} cores shared by client and server)",
            self.scenario, self.date, self.machine.cores
        );
        for m in &self.measurements {
            println!("  {}", line(m));
        }
        for b in &self.budgets {
            println!("  budget {:<58} measured {:<40} {}", b.budget, b.measured, if b.met { "MET" } else { "NOT MET" });
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }
}

fn line(m: &Measurement) -> String {
    let mut s = format!("{:<44}", m.name);
    if let Some(r) = m.per_second {
        s.push_str(&format!(" {:>12.0}/s", r));
    }
    if let Some(l) = &m.latency {
        s.push_str(&format!("  {l}"));
    }
    if !m.extra.is_null() {
        s.push_str(&format!("  {}", m.extra));
    }
    s
}

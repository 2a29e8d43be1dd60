//! valed: the userspace VALE switch daemon. See `valed --help`.

use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use vale_tools::cli::valed::{Args, settings};

fn level(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn main() {
    let args = Args::parse();
    let s = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("valed: {e}");
            std::process::exit(2);
        }
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level(s.verbose));
    // Colours only on a terminal; one line per event; under journald (which stamps each
    // line) no timestamps of our own.
    let journal = valed::log::stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| valed::log::OneLine(std::io::stderr()))
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let logs = tracing_subscriber::registry().with(filter);
    if journal {
        logs.with(fmt.without_time()).init();
    } else {
        logs.with(fmt).init();
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("valed: cannot handle signal {sig}: {e}");
            std::process::exit(1);
        }
    }
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        eprintln!("valed: cannot handle SIGHUP: {e}");
        std::process::exit(1);
    }
    let set_verbosity: valed::SetVerbosity = Box::new(move |v| {
        let _ = handle.modify(|f| *f = level(v));
    });
    if let Err(e) = valed::run(s, stop, reload, set_verbosity) {
        eprintln!("valed: {e}");
        std::process::exit(1);
    }
}

//! pkt-gen: netmap's traffic generator for the userspace VALE switch. See `pkt-gen --help`.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> ExitCode {
    let opts = vale_tools::pktgen::Options::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    match vale_tools::pktgen::run(opts, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pkt-gen: {e}");
            ExitCode::from(1)
        }
    }
}

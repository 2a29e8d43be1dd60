//! Receives frames on a port and prints a line per frame.
//! `cargo run -p vale --example receiver -- vale0:b` (with valed running)

use std::time::Duration;

fn main() -> Result<(), vale::Error> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "vale0:b".into());
    let port = vale::Port::open(&name)?;
    println!(
        "listening on {} (port {} of {})",
        port.name(),
        port.index(),
        port.switch()
    );
    let mut total = 0;
    while total < 10 {
        // Sleep until the switch delivers something (or a second passes).
        if !port.poll(vale::Interest::RX, Some(Duration::from_secs(1)))? {
            continue;
        }
        total += port.dispatch(0, |frame| {
            println!(
                "{} bytes from {:02x?} to {:02x?}",
                frame.len(),
                &frame[6..12],
                &frame[..6]
            );
        });
        port.rxsync()?; // give the slots back
    }
    Ok(())
}

//! Sends ten broadcast frames on a port.
//! `cargo run -p vale --example sender -- vale0:a` (with valed and the receiver running)

use std::time::Duration;

fn main() -> Result<(), vale::Error> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "vale0:a".into());
    let port = vale::Port::open(&name)?;
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]); // broadcast
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // a locally administered source
    frame[12..14].copy_from_slice(&[0x88, 0xb5]); // experimental ethertype
    for i in 0..10u8 {
        frame[14] = i;
        // nm_inject: copy into the next TX slot; wait for room if the ring is full.
        while !port.inject(&frame) {
            port.poll(vale::Interest::TX, Some(Duration::from_millis(100)))?;
        }
    }
    port.txsync()?; // hand the slots to the switch
    println!("sent 10 frames on {}", port.name());
    Ok(())
}

//! A fault-injecting TCP proxy for tests, between syncmail and a real server: it forwards
//! bytes both ways and, on the connections it is told to, cuts or stalls the stream after
//! a given number of bytes. Real servers cannot misbehave on cue; this makes them.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What goes wrong, and when.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Pass everything.
    None,
    /// Close both directions once the server has sent this many bytes (mid-FETCH).
    CutServerAfter(u64),
    /// Close both directions once the client has sent this many bytes (mid-APPEND).
    CutClientAfter(u64),
    /// Stop forwarding the server's bytes (but keep the connection open) after this many.
    StallServerAfter(u64),
}

pub struct FaultProxy {
    pub port: u16,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:`port` to 127.0.0.1:`target`; the first `faulty` connections get
    /// `fault`, the rest pass untouched.
    pub fn start(target: u16, fault: Fault, faulty: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let n = c2.fetch_add(1, Ordering::SeqCst);
                        let fault = if n < faulty { fault } else { Fault::None };
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                        pipe(client, server, fault, s2.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, connections, stop }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe(client: TcpStream, server: TcpStream, fault: Fault, stop: Arc<AtomicBool>) {
    let (cut_up, cut_down, stall_down) = match fault {
        Fault::None => (u64::MAX, u64::MAX, u64::MAX),
        Fault::CutServerAfter(n) => (u64::MAX, n, u64::MAX),
        Fault::CutClientAfter(n) => (n, u64::MAX, u64::MAX),
        Fault::StallServerAfter(n) => (u64::MAX, u64::MAX, n),
    };
    let c2 = client.try_clone().unwrap();
    let s2 = server.try_clone().unwrap();
    let stop2 = stop.clone();
    std::thread::spawn(move || copy(client, server, cut_up, u64::MAX, stop));
    std::thread::spawn(move || copy(s2, c2, cut_down, stall_down, stop2));
}

/// Copies `from` → `to` until EOF; after `cut` bytes closes both, after `stall` bytes
/// reads on but forwards nothing more.
fn copy(mut from: TcpStream, mut to: TcpStream, cut: u64, stall: u64, stop: Arc<AtomicBool>) {
    let mut sent = 0u64;
    let mut buf = [0u8; 16 << 10];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let allowed = (cut.min(stall).saturating_sub(sent)).min(n as u64) as usize;
        if to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        sent += allowed as u64;
        if sent >= cut {
            break;
        }
        if sent >= stall {
            // Hold the connection open, forwarding nothing, until the client gives up.
            let mut sink = [0u8; 16 << 10];
            while matches!(from.read(&mut sink), Ok(n) if n > 0) {}
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

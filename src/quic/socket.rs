//! A listener's UDP socket, kept in Pingora's descriptor table (the table a
//! zero-downtime upgrade sends to the new process): taken from it when the old process
//! handed it over, else bound here and added to it.

use super::fd_key;
use pingora::server::ListenFds;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The UDP socket for `addr`: the inherited one if the table has it, else a new one.
pub fn bind(addr: &SocketAddr, fds: Option<&ListenFds>) -> io::Result<UdpSocket> {
    let key = fd_key(addr);
    let Some(table) = fds else {
        return fresh(addr);
    };
    let mut table = table.lock();
    if let Some(fd) = table.get(&key).copied() {
        // SAFETY: the descriptor came from the old process over the upgrade socket and
        // is registered under this listener's own key: nothing else in this process
        // owns it (the table keeps only its number, to send it on at the next upgrade).
        let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        socket.set_nonblocking(true)?;
        log::info!("udp {addr}: socket taken over from the previous process");
        return Ok(socket);
    }
    let socket = fresh(addr)?;
    table.add(key, socket.as_raw_fd());
    Ok(socket)
}

fn fresh(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

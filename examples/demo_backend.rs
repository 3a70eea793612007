//! A tiny HTTP/1.1 backend for the demo and the benchmark: answers every request with
//! its own name, the method and path it saw, and an `X-Backend` header.
//!
//! Usage: demo_backend NAME ADDR [NAME ADDR ...]   e.g. demo_backend a 127.0.0.1:9001

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() % 2 != 0 {
        eprintln!("usage: demo_backend NAME ADDR [NAME ADDR ...]");
        std::process::exit(2);
    }
    let mut tasks = Vec::new();
    for pair in args.chunks(2) {
        let name: Arc<str> = pair[0].as_str().into();
        let listener = match TcpListener::bind(&pair[1]).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo_backend: cannot listen on {}: {e}", pair[1]);
                std::process::exit(1);
            }
        };
        eprintln!("demo backend {name} on {}", pair[1]);
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, name.clone()));
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn serve(mut stream: TcpStream, name: Arc<str>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request head (bodies are not expected by the demo).
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 64 * 1024 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let request_line = head.lines().next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("?");
        let path = parts.next().unwrap_or("?");
        let body = format!("backend {name}: {method} {path}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

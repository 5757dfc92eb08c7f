//! Real local receivers for notifications: an HTTP listener and an SMTP sink
//! on loopback, each recording what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP server on 127.0.0.1 that records request bodies and answers 200
/// (or never answers, to play a hanging endpoint).
pub struct HttpSink {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<String>>>,
    /// `METHOD PATH` of each request, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub fn http_sink(hang: bool) -> HttpSink {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (store, lines) = (bodies.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (store, lines) = (store.clone(), lines.clone());
            std::thread::spawn(move || handle_http(stream, store, lines, hang));
        }
    });
    HttpSink {
        url,
        bodies,
        requests,
    }
}

fn handle_http(
    stream: TcpStream,
    store: Arc<Mutex<Vec<String>>>,
    lines: Arc<Mutex<Vec<String>>>,
    hang: bool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if first {
            let request: Vec<&str> = line.split_whitespace().take(2).collect();
            lines.lock().unwrap().push(request.join(" "));
            first = false;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    store
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    if hang {
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let mut s = stream;
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// A minimal SMTP server on 127.0.0.1 that accepts every message and keeps it.
pub struct SmtpSink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<String>>>,
}

pub fn smtp_sink() -> SmtpSink {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let store = messages.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let store = store.clone();
            std::thread::spawn(move || {
                let _ = handle_smtp(stream, store);
            });
        }
    });
    SmtpSink { port, messages }
}

fn handle_smtp(stream: TcpStream, store: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink.local ESMTP test sink\r\n")?;
    let mut envelope = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            out.write_all(b"250-sink.local\r\n250 8BITMIME\r\n")?;
        } else if cmd.starts_with("MAIL FROM") || cmd.starts_with("RCPT TO") {
            envelope += line.trim_end();
            envelope.push('\n');
            out.write_all(b"250 OK\r\n")?;
        } else if cmd == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = envelope.clone();
            loop {
                let mut l = String::new();
                reader.read_line(&mut l)?;
                if l == ".\r\n" || l.is_empty() {
                    break;
                }
                data += &l;
            }
            store.lock().unwrap().push(data);
            out.write_all(b"250 OK queued\r\n")?;
        } else if cmd == "QUIT" {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"250 OK\r\n")?;
        }
    }
}

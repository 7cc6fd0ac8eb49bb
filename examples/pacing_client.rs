//! The client of the pacing benchmark (bench/pacing.py): opens N connections at once, sends each
//! the same raw HTTP/1.1 request for a paced stream, and timestamps every token as its bytes are
//! read. One thread and one epoll loop (mio), so that thousands of streams are timed without the
//! scheduling noise of an interpreter; pin it apart from Envoy.
//!
//!     cargo run --release --example pacing_client -- <port> <streams> <request-file>
//!
//! Prints one JSON object: `{"streams": [{"ttft_ms": f, "gaps_ms": [f, …]}, …], "failed": n,
//! "failure": "…"}`, with each stream's time to its first token (from sending the request) and
//! the gaps between its tokens. A token is an event whose `"content"` is not empty.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

/// How a token's event starts; the role chunk's empty content (`"content":""`) is not a token.
const CONTENT: &[u8] = b"\"content\":\"";
/// The stream's last event.
const DONE: &[u8] = b"[DONE]";
/// Streams still open after this long are counted as failed.
const DEADLINE: Duration = Duration::from_secs(120);

/// One stream's connection and what it has received.
struct Stream {
    socket: TcpStream,
    sent: Option<Instant>,
    received: Vec<u8>,
    /// Where the next search for a token starts in `received`.
    scanned: usize,
    arrivals: Vec<Instant>,
    done: bool,
}

impl Stream {
    /// Counts the tokens that the bytes just read completed, all arriving `now`.
    fn note_tokens(&mut self, now: Instant) {
        while let Some(offset) = find(&self.received[self.scanned..], CONTENT) {
            let value_at = self.scanned + offset + CONTENT.len();
            let Some(&first) = self.received.get(value_at) else {
                // The value has not arrived yet: look again after the next read.
                self.scanned += offset;
                return;
            };
            if first != b'"' {
                self.arrivals.push(now);
            }
            self.scanned = value_at;
        }
        // A token's start may be cut off at the end: search its first bytes again next time.
        let tail = self.received.len().saturating_sub(CONTENT.len() - 1);
        self.scanned = self.scanned.max(tail);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, streams, request_file] = args.as_slice() else {
        eprintln!("usage: pacing_client <port> <streams> <request-file>");
        std::process::exit(2);
    };
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("a port number");
    let count: usize = streams.parse().expect("a number of streams");
    let request = std::fs::read(request_file).expect("the request file");

    let mut poll = Poll::new().expect("epoll");
    let mut open: HashMap<Token, Stream> = HashMap::with_capacity(count);
    let mut failures: Vec<String> = Vec::new();
    for id in 0..count {
        match TcpStream::connect(address) {
            Ok(mut socket) => {
                poll.registry()
                    .register(
                        &mut socket,
                        Token(id),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .expect("register a socket");
                open.insert(
                    Token(id),
                    Stream {
                        socket,
                        sent: None,
                        received: Vec::with_capacity(8 * 1024),
                        scanned: 0,
                        arrivals: Vec::new(),
                        done: false,
                    },
                );
            }
            Err(error) => failures.push(format!("connect: {error}")),
        }
    }

    let mut finished: Vec<Stream> = Vec::with_capacity(count);
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 64 * 1024];
    let started = Instant::now();
    while !open.is_empty() && started.elapsed() < DEADLINE {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("epoll wait");
        for event in &events {
            let token = event.token();
            let Some(stream) = open.get_mut(&token) else {
                continue;
            };
            if event.is_writable() && stream.sent.is_none() {
                match stream.socket.write(&request) {
                    Ok(n) if n == request.len() => stream.sent = Some(Instant::now()),
                    Ok(_) => stream.done = true,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                    Err(error) if error.kind() == ErrorKind::NotConnected => {}
                    Err(_) => stream.done = true,
                }
            }
            if event.is_readable() || event.is_read_closed() {
                loop {
                    match stream.socket.read(&mut buffer) {
                        Ok(0) => {
                            stream.done = true;
                            break;
                        }
                        Ok(n) => {
                            let now = Instant::now();
                            // Only the bytes just read (and a marker cut at the end of the last
                            // read) can complete `[DONE]`: searching all received at every read
                            // cost this client time quadratic in the stream's length.
                            let unsearched = stream.received.len().saturating_sub(DONE.len() - 1);
                            stream.received.extend_from_slice(&buffer[..n]);
                            stream.note_tokens(now);
                            if find(&stream.received[unsearched..], DONE).is_some() {
                                stream.done = true;
                                break;
                            }
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            stream.done = true;
                            break;
                        }
                    }
                }
            }
            if stream.done {
                let mut stream = open.remove(&token).expect("an open stream");
                poll.registry()
                    .deregister(&mut stream.socket)
                    .expect("deregister a socket");
                finished.push(stream);
            }
        }
    }
    failures.extend(
        open.values()
            .map(|_| "still open at the deadline".to_owned()),
    );

    let mut timed = Vec::with_capacity(finished.len());
    for stream in finished {
        match (stream.sent, stream.arrivals.first()) {
            (Some(sent), Some(&first)) => {
                let ttft = first.duration_since(sent).as_secs_f64() * 1000.0;
                let gaps: Vec<f64> = stream
                    .arrivals
                    .windows(2)
                    .map(|pair| pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0)
                    .collect();
                timed.push(json!({"ttft_ms": ttft, "gaps_ms": gaps}));
            }
            _ => {
                let head =
                    String::from_utf8_lossy(&stream.received[..stream.received.len().min(120)]);
                failures.push(format!("no token arrived; the stream began {head:?}"));
            }
        }
    }
    let report = json!({
        "streams": timed,
        "failed": failures.len(),
        "failure": failures.first().cloned().unwrap_or_default(),
    });
    println!("{report}");
}

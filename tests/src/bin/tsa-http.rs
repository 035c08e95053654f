//! A timestamp authority over HTTP for the tests: `openssl ts -reply` behind a minimal HTTP/1.1
//! handler on 127.0.0.1, as RFC 3161 §3.4 transports it (POST `application/timestamp-query`,
//! answer `application/timestamp-reply`). Started and stopped by pid by `oci_attest_tests::tsa`.
//!
//! Usage: tsa-http OPENSSL_TS_CONFIG PORT_FILE
//! Binds an ephemeral port, writes it to PORT_FILE, then serves until killed. Written by hand:
//! it is a dozen lines of HTTP that only these tests speak to.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Largest query accepted: a TimeStampReq is well under 1 KiB.
const MAX_QUERY_BYTES: usize = 64 << 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, port_file] = args.as_slice() else {
        eprintln!("usage: tsa-http OPENSSL_TS_CONFIG PORT_FILE");
        std::process::exit(2);
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let temporary = format!("{port_file}.tmp");
    std::fs::write(&temporary, port.to_string()).expect("write the port file");
    std::fs::rename(&temporary, port_file).expect("publish the port file");
    for (serial, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        if let Err(error) = serve(stream, Path::new(config), serial) {
            eprintln!("tsa-http: request {serial}: {error}");
        }
    }
}

fn serve(stream: TcpStream, config: &Path, serial: usize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if length == 0 || length > MAX_QUERY_BYTES {
        return respond(
            &stream,
            "400 Bad Request",
            "text/plain",
            b"bad query length",
        );
    }
    let mut query = vec![0u8; length];
    reader.read_exact(&mut query)?;
    let dir = config.parent().unwrap_or(Path::new("."));
    let (query_file, reply_file) = (
        dir.join(format!("query-{serial}.tsq")),
        dir.join(format!("reply-{serial}.tsr")),
    );
    std::fs::write(&query_file, &query)?;
    let status = Command::new("openssl")
        .args(["ts", "-reply", "-config"])
        .arg(config)
        .arg("-queryfile")
        .arg(&query_file)
        .arg("-out")
        .arg(&reply_file)
        .status()?;
    if !status.success() {
        return respond(
            &stream,
            "500 Internal Server Error",
            "text/plain",
            b"openssl ts failed",
        );
    }
    let reply = std::fs::read(&reply_file)?;
    respond(&stream, "200 OK", "application/timestamp-reply", &reply)
}

fn respond(
    mut stream: &TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

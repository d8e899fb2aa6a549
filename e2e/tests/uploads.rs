//! Hostile uploads straight at the push API: each is refused with a 4xx and a stable code, nothing
//! is stored, and an endless body does not grow the server's memory.

use paas_e2e::{unique, zip_of, Options, Platform};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn push_zip(p: &Platform, token: &str, app: &str, zip: Vec<u8>) -> (u16, serde_json::Value) {
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
    );
    let res = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap())
}

/// Files in the blobstore (packages and droplets) and in its scratch dir.
fn stored_files(p: &Platform) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&p.data_dir().join("blobs")) + count(&p.data_dir().join("tmp"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_stored() {
    let p = Platform::start_server(Options {
        server_env: vec![("PAAS_MAX_UNPACKED_MB".into(), "16".into())],
        ..Options::default()
    })
    .expect("server");
    let token = p.admin_token().unwrap();
    let app = unique("hostile");

    // Symlink out of the tree.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        w.start_file("app.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"print(1)").unwrap();
        w.add_symlink(
            "passwd",
            "../../../../etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.finish().unwrap();
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "zip slip",
            zip_of(&[("app.py", b"x", 0o644), ("../../../tmp/evil", b"x", 0o644)]),
        ),
        ("absolute path", zip_of(&[("/tmp/evil", b"x", 0o644)])),
        ("symlink", buf.into_inner()),
        // 64 MiB of zeros deflates to about 64 KiB; the server counts inflated bytes (16 MiB cap here).
        (
            "zip bomb",
            zip_of(&[
                ("app.py", b"x", 0o644),
                ("zeros", &vec![0u8; 64 << 20], 0o644),
            ]),
        ),
    ];
    for (what, zip) in cases {
        let (status, body) = push_zip(&p, &token, &app, zip);
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["code"], "invalid_archive", "{what}: {body}");
        assert!(!body["message"].as_str().unwrap_or_default().is_empty());
    }
    assert!(!std::path::Path::new("/tmp/evil").exists());
    assert_eq!(stored_files(&p), 0, "a refused upload left files behind");
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/v1/apps/{app}", p.api_url()))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        404,
        "a refused push must not create the app"
    );
}

#[test]
fn million_entry_archive_is_refused() {
    let p = Platform::start_server(Options::default()).expect("server");
    let token = p.admin_token().unwrap();
    let mut buf = std::io::Cursor::new(Vec::with_capacity(120 << 20));
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..1_000_000u32 {
            w.start_file(format!("{i:x}"), opts).unwrap();
        }
        w.finish().unwrap();
    }
    let (status, body) = push_zip(&p, &token, &unique("many"), buf.into_inner());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("1000000 entries"),
        "{body}"
    );
    assert_eq!(stored_files(&p), 0);
}

fn raw_push_head(p: &Platform, token: &str, app: &str, length: Option<u64>) -> TcpStream {
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let len = match length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".into(),
    };
    write!(
        s,
        "POST /v1/apps/{app}/push HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=XBOUNDARYX\r\n{len}\r\n",
        p.addr
    )
    .unwrap();
    s
}

#[test]
fn huge_bodies_get_413_without_growing_memory() {
    let p = Platform::start_server(Options {
        server_env: vec![("PAAS_MAX_UPLOAD_MB".into(), "32".into())],
        ..Options::default()
    })
    .expect("server");
    let token = p.admin_token().unwrap();
    let pid = p.server_pid().unwrap();

    // Announced 3 GiB: refused before a byte of the body is read.
    let mut s = raw_push_head(&p, &token, &unique("big"), Some(3 << 30));
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));

    // 3 GiB streamed without a length: the server stops at its cap and answers 413, and its
    // memory does not grow with the body.
    let before = rss_kib(pid);
    let s = raw_push_head(&p, &token, &unique("big"), None);
    let mut reader = s.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut head = [0u8; 12];
        reader.read_exact(&mut head).map(|_| head)
    });
    let part_head = b"--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"app.zip\"\r\n\
                      Content-Type: application/zip\r\n\r\n";
    let mut w = s;
    let mut sent: u64 = 0;
    let chunk = vec![0u8; 1 << 20];
    let mut write = |data: &[u8]| -> std::io::Result<()> {
        write!(w, "{:x}\r\n", data.len())?;
        w.write_all(data)?;
        w.write_all(b"\r\n")
    };
    if write(part_head).is_ok() {
        while sent < (3 << 30) && !answer.is_finished() {
            if write(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
    }
    let head = answer.join().unwrap().expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    assert!(sent < 1 << 30, "the server kept reading: {sent} bytes sent");
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "server memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(stored_files(&p), 0, "the partial upload was left behind");
}

//! Unit tests of `http::headers`.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[test]
fn client_ip_behind_trusted_proxies() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_default()];
    let mut h = HeaderMap::new();
    h.insert(
        &FORWARDED_FOR.name,
        HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
    );
    assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2.2.2.2"));
    // an untrusted peer's header is ignored
    assert_eq!(client_ip(ip("3.3.3.3"), &h, &trusted), ip("3.3.3.3"));
    // no header: the peer
    assert_eq!(
        client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
        ip("10.0.0.1")
    );
}

#[test]
fn request_id_rules() {
    assert!(valid_request_id(b"abc-123_x.y:z"));
    assert!(!valid_request_id(b""));
    assert!(!valid_request_id(b"has space"));
    assert!(!valid_request_id(&[b'a'; 129]));
    assert_eq!(new_request_id().len(), 32);
}

#[test]
fn forwarded_for_appends_the_peer_to_every_line() {
    let peer = ip("192.0.2.9");
    assert_eq!(forwarded_for(&HeaderMap::new(), peer), "192.0.2.9");
    let mut h = HeaderMap::new();
    h.append(
        &FORWARDED_FOR.name,
        HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
    );
    h.append(&FORWARDED_FOR.name, HeaderValue::from_static("3.3.3.3"));
    assert_eq!(
        forwarded_for(&h, peer),
        "1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.9"
    );
    let v6 = ip("2001:db8::1");
    assert_eq!(forwarded_for(&HeaderMap::new(), v6), "2001:db8::1");
}

#[test]
fn ipv4_text_matches_std_formatting() {
    for octet in [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255] {
        for ip in [
            Ipv4Addr::new(octet, 0, 255, 7),
            Ipv4Addr::new(127, octet, 1, octet),
        ] {
            assert_eq!(ip_text(IpAddr::V4(ip)), ip.to_string());
        }
    }
    let v6 = ip("2001:db8::1");
    assert_eq!(ip_text(v6), "2001:db8::1");
}

#[test]
fn prepared_headers_keep_the_clients_case_and_order_on_the_wire() {
    let mut req = match RequestHeader::build("GET", b"/", Some(2)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    for (name, value) in [("Host", "a.test"), ("X-Real-IP", "203.0.113.1")] {
        if let Err(e) = req.append_header(name, value) {
            panic!("{e}");
        }
    }
    let f = Forwarded {
        peer: ip("192.0.2.9"),
        client: ip("192.0.2.10"),
        tls: false,
        request_id: "abc",
    };
    if let Err(e) = add_forwarding(&mut req, &f) {
        panic!("{e}");
    }
    let mut wire = Vec::new();
    req.header_to_h1_wire(&mut wire);
    assert_eq!(
        String::from_utf8_lossy(&wire),
        "Host: a.test\r\nx-real-ip: 192.0.2.10\r\nx-forwarded-for: 192.0.2.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a.test\r\nx-request-id: abc\r\n",
        "the client's X-Real-IP is replaced in place, the others follow in order"
    );
}

#[test]
fn security_headers_keep_the_backends_own_and_hsts_needs_tls() {
    let build = || match ResponseHeader::build(200, None) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let mut r = build();
    if let Err(e) = r.insert_header("x-frame-options", "SAMEORIGIN") {
        panic!("{e}");
    }
    if let Err(e) = add_security_headers(&mut r, false) {
        panic!("{e}");
    }
    assert_eq!(r.headers["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    assert!(!r.headers.contains_key("strict-transport-security"));
    let mut r = build();
    if let Err(e) = add_security_headers(&mut r, true) {
        panic!("{e}");
    }
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
}

#[test]
fn new_request_ids_are_lowercase_hex_and_differ() {
    let (a, b) = (new_request_id(), new_request_id());
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(a, b);
}

#[test]
fn host_port_is_ignored() {
    assert_eq!(strip_port("example.com:8080"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
    assert_eq!(strip_port("[::1]:80"), "::1");
}

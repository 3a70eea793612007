//! `listeners[]` with their `tls` and `tls.acme`.

use super::*;

pub(super) fn read_listener(d: &mut Decoder, node: &Node, path: &str) -> Option<ListenerConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let listen = listen_addr(d, &mut m, "listen");
    let tls = get_with(d, &mut m, "tls", read_tls);
    let http2 = boolean(d, &mut m, "http2", tls.is_some());
    let limits = get_with(d, &mut m, "limits", super::limits::read_limits).unwrap_or_default();
    let proxy_protocol = boolean(d, &mut m, "proxy_protocol", false);
    let http3 = boolean(d, &mut m, "http3", false);
    if http3 {
        if let Some(e) = validate::http3(tls.as_ref(), proxy_protocol) {
            d.error(m.key_pos("http3"), &m.child("http3"), e);
        }
    }
    m.finish(d, |k| {
        matches!(k, "quic" | "alt_svc").then_some("HTTP/3 is turned on with `http3: true`")
    });
    Some(ListenerConfig {
        name: name?,
        listen: listen?.0,
        http2,
        http3,
        tls,
        limits,
        proxy_protocol,
    })
}

pub(super) fn read_tls(d: &mut Decoder, node: &Node, path: &str) -> Option<TlsConfig> {
    let mut m = d.map(node, path)?;
    let certificates = get_with(d, &mut m, "certificates", |d, n, p| {
        Some(d.list(n, p, false, |d, n, p| {
            let mut c = d.map(n, p)?;
            d.spans.set(p, c.pos);
            let cert_file = required_string(d, &mut c, "cert_file");
            let key_file = required_string(d, &mut c, "key_file");
            c.finish(d, |_| None);
            Some(CertificateFiles {
                cert_file: cert_file?.into(),
                key_file: key_file?.into(),
            })
        }))
    })
    .unwrap_or_default();
    let acme = get_with(d, &mut m, "acme", read_acme);
    let client_ca_file = opt_path(d, &mut m, "client_ca_file");
    let default_auth = if client_ca_file.is_some() {
        ClientAuth::Require
    } else {
        ClientAuth::None
    };
    let client_auth = choice(d, &mut m, "client_auth", default_auth);
    if let Some(e) = validate::client_auth(client_auth, client_ca_file.is_some()) {
        d.error(m.key_pos("client_auth"), &m.child("client_auth"), e);
    }
    let min_version = choice(d, &mut m, "min_version", TlsVersion::Tls12);
    if let Some(e) = validate::tls_sources(certificates.len(), acme.is_some()) {
        d.error(m.pos, path, e);
    }
    m.finish(d, |_| None);
    Some(TlsConfig {
        certificates,
        acme,
        client_ca_file,
        client_auth,
        min_version,
    })
}

pub(super) fn read_acme(d: &mut Decoder, node: &Node, path: &str) -> Option<AcmeConfig> {
    let mut m = d.map(node, path)?;
    let email = opt_string(d, &mut m, "email");
    if let Some(e) = email.as_deref().and_then(validate::acme_email) {
        d.error(m.key_pos("email"), &m.child("email"), e);
    }
    let directory = opt_string(d, &mut m, "directory")
        .unwrap_or_else(|| "https://acme-v02.api.letsencrypt.org/directory".into());
    let domains: Vec<String> = name_list(d, &mut m, "domains", false)
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if let Some(e) = validate::acme_domains(&domains) {
        d.error(m.pos, &m.child("domains"), e);
    }
    for (i, name) in domains.iter().enumerate() {
        if let Some(problem) = validate::acme_domain(name) {
            let pos = m.key_pos("domains");
            d.error(pos, &format!("{}[{i}]", m.child("domains")), problem);
        }
    }
    let storage =
        opt_path(d, &mut m, "storage").unwrap_or_else(|| "/var/lib/switchyard/acme".into());
    let ca_file = opt_path(d, &mut m, "ca_file");
    m.finish(d, |_| None);
    Some(AcmeConfig {
        email,
        directory,
        domains,
        storage,
        ca_file,
    })
}

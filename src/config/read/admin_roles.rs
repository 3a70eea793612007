//! `admin.jwt` (SPEC §14): the JWKS source, the issuer and audience a token must carry,
//! and the claim naming its role.

use super::*;

pub(super) fn read_jwt(d: &mut Decoder, node: &Node) -> Option<JwtConfig> {
    let mut m = d.map(node, "admin.jwt")?;
    let pos = m.pos;
    let file = opt_path(d, &mut m, "jwks_file");
    let url = get_with(d, &mut m, "jwks_url", |d, n, p| {
        d.parse(n, p, "an http:// or https:// URL", |s| {
            url::Url::parse(s)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(|_| s.to_string())
        })
    });
    let jwks = match (file, url) {
        (Some(f), None) => Some(JwksSource::File(f)),
        (None, Some(u)) => Some(JwksSource::Url(u)),
        (Some(_), Some(_)) => {
            d.error(pos, "admin.jwt", "give jwks_file or jwks_url, not both");
            None
        }
        (None, None) => {
            d.error(pos, "admin.jwt", "needs jwks_file or jwks_url");
            None
        }
    };
    let issuer = required_string(d, &mut m, "issuer");
    let audience = required_string(d, &mut m, "audience");
    let role_claim =
        opt_string(d, &mut m, "role_claim").unwrap_or_else(|| "switchyard_role".into());
    if role_claim.is_empty() {
        d.error(
            m.key_pos("role_claim"),
            "admin.jwt.role_claim",
            "must not be empty",
        );
    }
    m.finish(d, |_| None);
    Some(JwtConfig {
        jwks: jwks?,
        issuer: issuer?,
        audience: audience?,
        role_claim,
    })
}

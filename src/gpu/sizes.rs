//! Byte sizes and bandwidths as users write them: `512MiB`, `16GiB`, `2GB`, `1048576`,
//! `12GB/s`.

const UNITS: &[(&str, u64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("B", 1),
];

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = UNITS.iter().find_map(|(u, m)| t.strip_suffix(u).map(|n| (n.trim(), *m))).unwrap_or((t, 1));
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a size such as 512MiB or 16GiB"))?;
    let bytes = value * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Bytes per second from `12GB/s`, `800MiB/s`, ...
pub fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let per_s = t.strip_suffix("/s").ok_or_else(|| format!("{s:?} is not a bandwidth such as 12GB/s"))?;
    parse_bytes(per_s).map(|b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_bandwidths() {
        assert_eq!(parse_bytes("16GiB"), Ok(16 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0MiB").is_err());
        assert!(parse_bytes("-1GiB").is_err());
        assert_eq!(parse_bandwidth("12GB/s"), Ok(12e9));
        assert!(parse_bandwidth("12GB").is_err());
    }
}

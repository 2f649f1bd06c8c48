//! Byte counts from Kubernetes quantities (`256Mi`, `1G`, `1.5Gi`, `2e9`). The CRD schema lets
//! any string through for a quantity, so a bad one is reported, never trusted.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const MI: u64 = 1 << 20;

/// The number of bytes `quantity` stands for, rounded up to a whole byte; `None` when it is not a
/// non-negative quantity or does not fit in 64 bits.
pub fn to_bytes(quantity: &Quantity) -> Option<u64> {
    let (numerator, denominator) = parse(&quantity.0)?;
    u64::try_from(numerator.div_ceil(denominator)).ok()
}

/// Whether two quantities stand for the same amount (`1Gi` and `1024Mi`, `0.5` and `500m`).
pub fn same_amount(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some((an, ad)), Some((bn, bd))) => {
            matches!((an.checked_mul(bd), bn.checked_mul(ad)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// The exact value of a non-negative quantity as `numerator / denominator`.
fn parse(text: &str) -> Option<(u128, u128)> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mantissa: u128 = digits.parse().ok()?;
    // value = mantissa * numerator / denominator
    let mut numerator: u128 = 1;
    let mut denominator: u128 = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    match suffix {
        "" => {}
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1])? as u32 + 1;
            numerator = 1u128 << (10 * power);
        }
        "k" | "M" | "G" | "T" | "P" | "E" => {
            let power = "kMGTPE".find(suffix)? as u32 + 1;
            numerator = 1000u128.pow(power);
        }
        "m" => denominator = denominator.checked_mul(1000)?,
        "u" => denominator = denominator.checked_mul(1_000_000)?,
        "n" => denominator = denominator.checked_mul(1_000_000_000)?,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            let scale = 10u128.checked_pow(power.unsigned_abs())?;
            if power >= 0 {
                numerator = scale;
            } else {
                denominator = denominator.checked_mul(scale)?;
            }
        }
        _ => return None,
    }
    Some((mantissa.checked_mul(numerator)?, denominator))
}

/// `bytes` rounded up to whole mebibytes, written the way the API server writes quantities
/// (`1Gi` rather than `1024Mi`), so a comparison with the stored object sees no difference.
pub fn mebibytes(bytes: u64) -> Quantity {
    let mib = bytes.div_ceil(MI);
    if mib > 0 && mib.is_multiple_of(1024) {
        Quantity(format!("{}Gi", mib / 1024))
    } else {
        Quantity(format!("{mib}Mi"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Option<u64> {
        to_bytes(&Quantity(text.to_owned()))
    }

    #[test]
    fn binary_decimal_and_exponent_forms() {
        assert_eq!(bytes("256Mi"), Some(256 * MI));
        assert_eq!(bytes("1.5Gi"), Some(1536 * MI));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("2e3"), Some(2000));
        assert_eq!(bytes("12345"), Some(12345));
        assert_eq!(bytes("1500m"), Some(2), "fractions of a byte round up");
        assert_eq!(bytes("0.5k"), Some(500));
    }

    #[test]
    fn garbage_and_negative_quantities_are_refused() {
        for text in [
            "",
            "Mi",
            "-1Gi",
            "1Qi",
            "1.2.3",
            "1 Gi",
            "99999999999999999999Ei",
            "1e99",
        ] {
            assert_eq!(bytes(text), None, "{text:?}");
        }
    }

    #[test]
    fn equal_amounts_in_other_units() {
        assert!(same_amount("1Gi", "1024Mi"));
        assert!(same_amount("0.5", "500m"));
        assert!(same_amount("1k", "1000"));
        assert!(!same_amount("1G", "1Gi"));
        assert!(!same_amount("1Gi", "lots"));
    }

    #[test]
    fn mebibytes_are_written_canonically() {
        assert_eq!(mebibytes(320 * MI).0, "320Mi");
        assert_eq!(mebibytes(2048 * MI).0, "2Gi");
        assert_eq!(mebibytes(MI + 1).0, "2Mi");
    }
}

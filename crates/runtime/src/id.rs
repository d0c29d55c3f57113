//! Identifiers for records a service makes (keys, jobs, models): a prefix that says what it names,
//! and 128 random bits.

/// `PREFIX_` followed by 32 hex digits of fresh randomness, for example `job_3f…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 16]>()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_their_prefix_and_128_random_bits() {
        let a = super::new_id("job");
        let b = super::new_id("job");
        assert!(a.starts_with("job_") && a.len() == 4 + 32, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}

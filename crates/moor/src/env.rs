//! The operator's environment as `moor` reads it: a variable, or the file its `<NAME>_FILE` form names (a
//! Kubernetes secret mount), one reader for every secret (`BACKUP_KEY`, `APP_KEY`, `AWS_*`, `DATABASE_URL`).

use anyhow::{Context, bail};

/// This process's environment variable `name`, if set.
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The secret `name` from `var`: the variable itself when it is set and not blank, else the trimmed contents
/// of the file `<name>_FILE` names. A file that cannot be read, or holds nothing, is an error naming it.
pub fn secret(var: impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Option<String>> {
    if let Some(value) = var(name).filter(|v| !v.trim().is_empty()) {
        return Ok(Some(value));
    }
    let Some(path) = var(&format!("{name}_FILE")).filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    let path = path.trim();
    let value = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}_FILE ({path})"))?;
    let value = value.trim();
    if value.is_empty() {
        bail!("{name}_FILE ({path}) is empty");
    }
    Ok(Some(value.to_owned()))
}

/// An environment of fixed pairs, for tests.
#[cfg(test)]
pub(crate) fn fixed(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_its_variable_then_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, "from the file\n").expect("write");
        let path = file.display().to_string();
        let env = move |name: &str| match name {
            "ONLY_FILE_FILE" | "BOTH_FILE" => Some(path.clone()),
            "BOTH" => Some("from the variable".to_owned()),
            _ => None,
        };
        assert_eq!(
            secret(&env, "BOTH").expect("both").as_deref(),
            Some("from the variable")
        );
        assert_eq!(
            secret(&env, "ONLY_FILE").expect("file").as_deref(),
            Some("from the file")
        );
        assert_eq!(secret(&env, "NEITHER").expect("neither"), None);
        std::fs::write(&file, " \n").expect("write");
        assert!(secret(&env, "ONLY_FILE").is_err(), "an empty file");
        std::fs::remove_file(&file).expect("remove");
        let err = secret(&env, "ONLY_FILE").expect_err("a missing file");
        assert!(err.to_string().contains("ONLY_FILE_FILE"), "{err}");
    }
}

//! The deployment's own secrets: the Ed25519 key its receipts are signed with, and the salt
//! that hashes end users' ids in them. Made once, by the first node that asks, and the same
//! for every node of a cluster (they live in the shared metadata).

use crate::sql::params;
use crate::{MetaError, MetaStore, Result};

/// The deployment's signing key and salt.
#[derive(Clone)]
pub struct DeploymentKeys {
    /// An Ed25519 secret key (its 32 bytes).
    pub signing_key: [u8; 32],
    /// Salt for hashing user ids in receipts.
    pub salt: [u8; 16],
}

/// Never printed: the key is a secret.
impl std::fmt::Debug for DeploymentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentKeys(..)")
    }
}

fn decode<const N: usize>(column: &str, text: &str) -> Result<[u8; N]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| MetaError::Corrupt(format!("deployment_keys.{column} is not {N} bytes")))
}

impl MetaStore {
    /// The deployment's keys, made on the first call.
    pub fn deployment_keys(&self) -> Result<DeploymentKeys> {
        let (key, salt) = (rand::random::<[u8; 32]>(), rand::random::<[u8; 16]>());
        let (key, salt): (String, String) = self.with(|c| {
            c.execute(
                "INSERT INTO deployment_keys (id, signing_key, salt) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO NOTHING",
                params![hex::encode(key), hex::encode(salt)],
            )?;
            c.query_row(
                "SELECT signing_key, salt FROM deployment_keys WHERE id = 1",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok(DeploymentKeys {
            signing_key: decode("signing_key", &key)?,
            salt: decode("salt", &salt)?,
        })
    }
}

//! Additional authenticated data: what a field ciphertext is bound to.

use crate::encoding::put_len_prefixed;
use kernel::TenantId;
use uuid::Uuid;

/// Where a field ciphertext lives: tenant, table, column and row.
///
/// Threat addressed: an attacker (or a bug) with write access to the database copies a ciphertext
/// from one place to another: another patient's row, another column of the same row (say, a
/// diagnosis into the notes shown to a receptionist), or another tenant. AES-GCM authenticates the
/// AAD, so decrypting with the AAD of the new place fails with `CryptoError::Decrypt`.
///
/// Table and column names are code constants, not user input. The encoding is canonical and
/// length-prefixed, so no two different `Aad` values encode to the same bytes. Changing the
/// encoding makes every stored ciphertext undecryptable: it is versioned by the ciphertext format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aad<'a> {
    pub tenant: TenantId,
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: Uuid,
}

impl<'a> Aad<'a> {
    pub fn new(tenant: TenantId, table: &'a str, column: &'a str, row_id: impl Into<Uuid>) -> Self {
        Self { tenant, table, column, row_id: row_id.into() }
    }

    /// Appends the canonical encoding: tenant (16 bytes), table and column (u64 length + UTF-8),
    /// row id (16 bytes).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.tenant.as_uuid().as_bytes());
        put_len_prefixed(out, self.table.as_bytes());
        put_len_prefixed(out, self.column.as_bytes());
        out.extend_from_slice(self.row_id.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(aad: &Aad<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        aad.encode_into(&mut out);
        out
    }

    #[test]
    fn encoding_is_unambiguous_across_the_table_column_boundary() {
        let tenant = TenantId::new();
        let row = Uuid::now_v7();
        let a = Aad::new(tenant, "patients", "notes", row);
        let b = Aad::new(tenant, "patientsn", "otes", row);
        let c = Aad::new(tenant, "", "patientsnotes", row);
        assert_ne!(encoded(&a), encoded(&b));
        assert_ne!(encoded(&a), encoded(&c));
        assert_ne!(encoded(&b), encoded(&c));
    }
}

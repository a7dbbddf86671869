//! Field ciphertexts: round trips, tamper detection, AAD binding and parser robustness.

use crypto::{
    Aad, CryptoError, DataKey, DekRef, EncryptedField, FieldHeader, NONCE_LEN, TAG_LEN, decrypt_field, encrypt_field,
    from_text, to_text,
};
use kernel::{PatientId, TenantId};
use proptest::prelude::*;
use uuid::Uuid;

fn header() -> FieldHeader {
    FieldHeader::new("arn:aws:kms:eu-central-1:111122223333:key/abc", "", DekRef::new(PatientId::new(), 1)).unwrap()
}

fn aad(tenant: TenantId, row: Uuid) -> Aad<'static> {
    Aad::new(tenant, "patients", "notes", row)
}

fn sealed(plaintext: &[u8]) -> (DataKey, Aad<'static>, Vec<u8>) {
    let dek = DataKey::generate().unwrap();
    let aad = aad(TenantId::new(), Uuid::now_v7());
    let ct = encrypt_field(&dek, &header(), &aad, plaintext).unwrap();
    (dek, aad, ct)
}

#[test]
fn every_flipped_bit_anywhere_is_rejected() {
    let (dek, aad, ct) = sealed(b"diagnosis: F32.1, moderate depressive episode");
    assert!(decrypt_field(&dek, &aad, &ct).is_ok());
    for bit in 0..ct.len() * 8 {
        let mut bad = ct.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let result = decrypt_field(&dek, &aad, &bad);
        assert!(result.is_err(), "bit {bit} of {} flipped and still decrypted", ct.len() * 8);
        // Nonce, body and tag bits fail authentication; header bits fail either parsing (a
        // length or the version changed) or authentication.
        if bit / 8 >= header().encoded_len() {
            assert!(matches!(result, Err(CryptoError::Decrypt)), "bit {bit}");
        }
    }
}

#[test]
fn header_fields_are_authenticated() {
    // Rewriting the header consistently (valid format, other DEK generation, other KEK labels)
    // must fail: the header is part of the GCM AAD.
    let (dek, aad, ct) = sealed(b"x");
    let original = EncryptedField::decode(&ct).unwrap();
    let h = original.header.clone();
    let variants = [
        FieldHeader::new(h.kek_id(), h.kek_version(), DekRef::new(h.dek().patient, 2)).unwrap(),
        FieldHeader::new(h.kek_id(), h.kek_version(), DekRef::new(PatientId::new(), 1)).unwrap(),
        FieldHeader::new("other-kek", h.kek_version(), h.dek()).unwrap(),
        FieldHeader::new(h.kek_id(), "2", h.dek()).unwrap(),
    ];
    for header in variants {
        let forged = EncryptedField { header, ..original.clone() }.encode();
        assert!(matches!(decrypt_field(&dek, &aad, &forged), Err(CryptoError::Decrypt)));
    }
}

#[test]
fn a_ciphertext_moved_elsewhere_does_not_decrypt() {
    let tenant = TenantId::new();
    let row = Uuid::now_v7();
    let dek = DataKey::generate().unwrap();
    let here = Aad::new(tenant, "patients", "notes", row);
    let ct = encrypt_field(&dek, &header(), &here, b"private").unwrap();
    let elsewhere = [
        Aad::new(TenantId::new(), "patients", "notes", row),
        Aad::new(tenant, "appointments", "notes", row),
        Aad::new(tenant, "patients", "diagnosis", row),
        Aad::new(tenant, "patients", "notes", Uuid::now_v7()),
        Aad::new(tenant, "patientsnotes", "", row),
    ];
    for aad in elsewhere {
        let err = decrypt_field(&dek, &aad, &ct).unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt));
        assert_eq!(err.to_string(), "decryption failed");
    }
    assert_eq!(&decrypt_field(&dek, &here, &ct).unwrap()[..], b"private");
}

#[test]
fn the_wrong_key_does_not_decrypt() {
    let (_, aad, ct) = sealed(b"private");
    let other = DataKey::generate().unwrap();
    assert!(matches!(decrypt_field(&other, &aad, &ct), Err(CryptoError::Decrypt)));
}

#[test]
fn every_truncation_is_rejected() {
    let (dek, aad, ct) = sealed(b"some plaintext");
    for len in 0..ct.len() {
        let result = decrypt_field(&dek, &aad, &ct[..len]);
        assert!(result.is_err(), "prefix of {len} bytes accepted");
        let _ = FieldHeader::parse(&ct[..len]);
        let _ = EncryptedField::decode(&ct[..len]);
    }
    assert!(matches!(decrypt_field(&dek, &aad, &[]), Err(CryptoError::Malformed(_))));
}

#[test]
fn appended_bytes_are_rejected() {
    let (dek, aad, mut ct) = sealed(b"abc");
    ct.push(0);
    assert!(matches!(decrypt_field(&dek, &aad, &ct), Err(CryptoError::Decrypt)));
}

#[test]
fn same_plaintext_encrypts_differently() {
    let dek = DataKey::generate().unwrap();
    let aad = aad(TenantId::new(), Uuid::now_v7());
    let a = encrypt_field(&dek, &header(), &aad, b"same").unwrap();
    let b = encrypt_field(&dek, &header(), &aad, b"same").unwrap();
    assert_ne!(a, b);
}

#[test]
fn text_form_round_trips_a_ciphertext() {
    let (dek, aad, ct) = sealed(b"stored in a text column");
    let text = to_text(&ct);
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(&decrypt_field(&dek, &aad, &from_text(&text).unwrap()).unwrap()[..], b"stored in a text column");
}

fn arb_aad() -> impl Strategy<Value = (u128, String, String, u128)> {
    (any::<u128>(), "[a-z_]{0,24}", "[a-z_]{0,24}", any::<u128>())
}

fn arb_header() -> impl Strategy<Value = FieldHeader> {
    ("[a-zA-Z0-9:/_-]{1,80}", "[0-9a-f]{0,32}", any::<u128>(), any::<u32>()).prop_map(
        |(id, version, patient, generation)| {
            FieldHeader::new(id, version, DekRef::new(PatientId::from_uuid(Uuid::from_u128(patient)), generation))
                .unwrap()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..=64 * 1024),
        (tenant, table, column, row) in arb_aad(),
        header in arb_header(),
    ) {
        let dek = DataKey::generate().unwrap();
        let aad = Aad::new(TenantId::from_uuid(Uuid::from_u128(tenant)), &table, &column, Uuid::from_u128(row));
        let ct = encrypt_field(&dek, &header, &aad, &plaintext).unwrap();
        prop_assert_eq!(ct.len(), header.encoded_len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        prop_assert_eq!(FieldHeader::parse(&ct).unwrap(), header);
        prop_assert_eq!(EncryptedField::decode(&ct).unwrap().encode(), ct.clone());
        prop_assert_eq!(&decrypt_field(&dek, &aad, &ct).unwrap()[..], &plaintext[..]);
    }

    #[test]
    fn a_flipped_bit_in_a_random_ciphertext_is_rejected(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        header in arb_header(),
        position in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dek = DataKey::generate().unwrap();
        let aad = aad(TenantId::new(), Uuid::now_v7());
        let mut ct = encrypt_field(&dek, &header, &aad, &plaintext).unwrap();
        let i = position.index(ct.len());
        ct[i] ^= 1 << bit;
        prop_assert!(decrypt_field(&dek, &aad, &ct).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dek = DataKey::from_bytes(&[1u8; 32]).unwrap();
        let aad = aad(TenantId::from_uuid(Uuid::nil()), Uuid::nil());
        let _ = FieldHeader::parse(&bytes);
        prop_assert!(decrypt_field(&dek, &aad, &bytes).is_err());
        // Strict and canonical: whatever decodes, encodes back to the same bytes.
        if let Ok(field) = EncryptedField::decode(&bytes) {
            prop_assert_eq!(field.encode(), bytes);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_never_panic(
        id_len in 0u8..=255,
        version_len in 0u8..=255,
        rest in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![crypto::FORMAT_V1, id_len];
        bytes.extend(rest.iter().take(usize::from(id_len)).map(|b| b'a' + b % 26));
        bytes.push(version_len);
        bytes.extend_from_slice(&rest);
        let dek = DataKey::from_bytes(&[1u8; 32]).unwrap();
        let _ = FieldHeader::parse(&bytes);
        let _ = EncryptedField::decode(&bytes);
        prop_assert!(decrypt_field(&dek, &aad(TenantId::new(), Uuid::nil()), &bytes).is_err());
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = from_text(&text);
    }
}

#pragma once
// OpenSSL's libcrypto, for its vectorized ChaCha20-Poly1305 and SHA-NI SHA-256 (docs/design.md, "Crypto
// libraries"). Only what Swift cannot call: an OSSL_PARAM array built from the parameter-name macros.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

/// EVP_MAC_init of an "HMAC" context with SHA-256 as its digest.
static inline int COpenSSL_HMAC_SHA256_init(EVP_MAC_CTX *ctx, const unsigned char *key, size_t keyLength) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_init(ctx, key, keyLength, params);
}

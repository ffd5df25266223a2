"""Parity checks of exports against the native model.

`verify.hf.verify_hf` checks an HF folder, `verify.gguf.verify_gguf` a `.gguf` file; both return
their result dict and record it in the folder's verify.json. Picking one by target, and raising
`VerificationFailed` when it fails, is the library's: `mythos_convert.api.verify`. Nothing is
imported here: `mythos_convert.verify.record` must stay cheap to import.
"""

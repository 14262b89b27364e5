from ftbroker.redact import MASK, looks_like_key, scrub

# Key-shaped strings are assembled here so that the source itself holds none.
AWS_KEY_ID = "AKIA" + "ABCDEFGHIJKLMNOP"
OPENAI_KEY = "sk-" + "canary-0123456789abcdef"


def test_scrub_masks_credential_variables_and_key_shapes(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("TOGETHER_API_KEY", "plainsecretvalue")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2hunter2")
    text = (f"key {OPENAI_KEY} and plainsecretvalue, pw hunter2hunter2, header Bearer abc.def-1234567890xyz, "
            f"aws {AWS_KEY_ID}, short sk-1")
    assert scrub(text) == "key *** and ***, pw ***, header ***, aws ***, short sk-1"


def test_scrub_masks_extra_values_and_leaves_ordinary_text():
    assert scrub("token abcdefgh1234 in a message", extra=["abcdefgh1234"]) == "token *** in a message"
    assert scrub("a bearer of good news; sk-learn; AKIA") == "a bearer of good news; sk-learn; AKIA"


def test_a_key_contained_in_another_is_masked_whole(monkeypatch):
    monkeypatch.setenv("A_TOKEN", "abcdefgh")
    monkeypatch.setenv("B_TOKEN", "abcdefghijkl")
    assert scrub("x abcdefghijkl y") == "x *** y"


def test_looks_like_key():
    assert looks_like_key(f"use {OPENAI_KEY}") and looks_like_key(AWS_KEY_ID)
    assert looks_like_key("Authorization: Bearer " + "x" * 20)
    assert not looks_like_key("sk-learn") and not looks_like_key("bearer tokens")


def test_a_urls_user_name_and_password_are_removed_or_masked():
    from ftbroker.redact import without_userinfo

    assert without_userinfo("http://alice:pw@host:8080/v1") == "http://host:8080/v1"
    assert without_userinfo("see https://tok@h/x?a=b@c and ftp://u:p@ss@h") == "see https://h/x?a=b@c and ftp://h"
    assert without_userinfo("mail alice@example.com, http://host/v1") == "mail alice@example.com, http://host/v1"
    assert scrub("failed: POST http://alice:s3cret@host/v1/files") == "failed: POST http://***@host/v1/files"


def test_wandb_keys_are_masked_by_their_field_or_their_shape(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    key = "0123456789abcdef0123456789abcdef01234567"
    for text in (f'{{"wandb_key": "{key}"}}', f"wandb_api_key={key}", f"key local-{key} refused"):
        assert key not in scrub(text) and MASK in scrub(text)
    assert scrub(f"commit {key}") == f"commit {key}"  # 40 hex digits alone are a commit, not a key

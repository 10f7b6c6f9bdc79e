"""The one registry shape: registration, lookup with close matches, temporary entries, listing summaries."""

import pytest

from xvit.registry import Registry, summary_of


def test_register_lookup_remove_and_temporary_entries():
    reg = Registry("thing", "things()")
    reg.add("alpha", 1, citation="a")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", 2)
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with reg.registered("beta", 2, citation="b") as entry:
        assert entry == 2 and reg.info("beta") == {"citation": "b"} and reg.names() == ["alpha", "beta"]
    assert "beta" not in reg
    with pytest.raises(RuntimeError), reg.registered("gamma", 3):
        raise RuntimeError("removed even after an error")
    assert "gamma" not in reg and reg.remove("alpha") == 1 and len(reg) == 0


def test_summary_is_the_first_sentence_on_one_line():
    class Doc:
        """Rollout ``J = Π M`` (Abnar & Zuidema 2020, Eq. 1), read out at the
        class token (e.g. for DeiT, both). Second sentence here.

        Args: not part of it.
        """

    assert summary_of(Doc) == ("Rollout ``J = Π M`` (Abnar & Zuidema 2020, Eq. 1), read out at the class token "
                               "(e.g. for DeiT, both).")
    assert summary_of(lambda: None) == ""

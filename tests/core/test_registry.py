import pytest

from wsolbench.errors import UserError
from wsolbench.registry import Registry, parse_names


def test_duplicate_name_refused():
    reg = Registry("method")
    reg.register("cam", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("cam", object())


def test_same_object_twice_is_harmless():
    reg, obj = Registry("method"), object()
    reg.register("a", obj)
    reg.register("a", obj)
    assert reg.get("a") is obj


def test_typo_suggests_closest_name():
    reg = Registry("method")
    for n in ("ours1", "ours2", "cam", "center"):
        reg.register(n, object())
    with pytest.raises(UserError, match=r"unknown method 'ourz1' \(did you mean 'ours1'\?\)"):
        reg.get("ourz1")


def test_lazy_entry_is_imported_only_on_get():

    reg = Registry("method")
    reg.register("lazy", "json.decoder:JSONDecoder")
    assert isinstance(reg._entries["lazy"], str)  # nothing imported at registration
    from json.decoder import JSONDecoder

    assert reg.get("lazy") is JSONDecoder
    assert reg._entries["lazy"] is JSONDecoder


def test_missing_optional_library_is_a_user_error():
    reg = Registry("method")
    reg.register("gone", "no_such_module_wsolbench:X")
    with pytest.raises(UserError, match="needs a library that is not installed"):
        reg.get("gone")


def test_parse_names_checks_each_and_refuses_repeats():
    reg = Registry("method")
    reg.register("a", object())
    reg.register("b", object())
    assert parse_names("a, b", reg) == ["a", "b"]
    with pytest.raises(UserError, match="named twice"):
        parse_names("a,a", reg)
    with pytest.raises(UserError, match="did you mean 'b'"):
        parse_names("a,bb", reg)


def test_builtin_methods_come_through_the_entry_point_group():
    from wsolbench.methods import METHODS

    names = METHODS.names()
    for n in ("ours1", "ours2", "cam", "center", "full"):
        assert n in names
    assert "entry point baselines.cam:CAM" in METHODS.origin("cam")

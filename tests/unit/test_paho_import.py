"""paho-mqtt's client loads without the standard library's HTTP stack, TLS and hashes, and each still works after."""

import ast
from pathlib import Path

import pytest
from fresh_python import fresh_python

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HOME = "edge_agent/paho_import.py"


@pytest.mark.parametrize("modules", ["edge_agent.link", "edgeops.mqtt", "edgeops.rollout.fleet"])
def test_the_mqtt_modules_load_no_http_stack(modules: str) -> None:
    probe = (f"import sys, {modules}, paho.mqtt.client\n"
             "print(*(m in sys.modules for m in ('urllib.request', 'http.client', 'email.parser')))")
    assert fresh_python(probe).split() == ["False", "False", "False"]


@pytest.mark.parametrize("modules", ["edgeops.mqtt", "edgeops.rollout.fleet"])
def test_the_control_plane_mqtt_modules_load_no_openssl(modules: str) -> None:
    probe = (f"import sys, {modules}, paho.mqtt.client\n"
             "print(*(m in sys.modules for m in ('ssl', '_ssl', 'hashlib', '_hashlib')))")
    assert fresh_python(probe).split() == ["False", "False", "False", "False"]


def test_paho_reaches_the_real_ssl_and_hashlib_through_its_stand_ins() -> None:
    probe = ("import sys, types, edge_agent.mqtt_client as m\n"
             "print('ssl' in sys.modules, 'hashlib' in sys.modules)\n"
             "print(m.mqtt.ssl.SSLContext.__module__, m.mqtt.ssl.SSLWantReadError.__name__)\n"  # TLS setup, except
             "print(m.mqtt.hashlib.sha1(b'x').hexdigest()[:8])\n"  # the websocket handshake
             "import ssl, hashlib\n"
             "print(type(ssl) is types.ModuleType, type(hashlib) is types.ModuleType, ssl is sys.modules['ssl'])\n")
    assert fresh_python(probe).split() == ["False", "False", "ssl", "SSLWantReadError", "11f6ad8e",
                                           "True", "True", "True"]


def test_a_module_loaded_before_paho_is_the_one_paho_gets() -> None:
    probe = ("import ssl, hashlib, urllib.request, edge_agent.mqtt_client as m\n"
             "print(m.mqtt.ssl is ssl, m.mqtt.hashlib is hashlib, m.mqtt.urllib.request is urllib.request)\n")
    assert fresh_python(probe).split() == ["True", "True", "True"]


def test_paho_still_reads_proxy_settings_through_the_real_urllib_request() -> None:
    probe = ("import sys, types, edge_agent.mqtt_client as m\n"
             "print(type(m.mqtt.urllib.request.getproxies()).__name__)\n"  # what Client._get_proxy calls
             "print(type(sys.modules['urllib.request']) is types.ModuleType)\n"
             "import urllib.request\n"
             "print(urllib.request is sys.modules['urllib.request'], callable(urllib.request.urlopen))\n")
    assert fresh_python(probe).split() == ["dict", "True", "True", "True"]


def test_a_later_import_of_urllib_request_is_the_real_module() -> None:
    probe = ("import sys, types, edge_agent.mqtt_client\n"
             "from urllib.request import Request, urlopen\n"
             "import urllib.request\n"
             "print(type(urllib.request) is types.ModuleType, urllib.request.Request is Request)\n"
             "import http.client; print(urlopen.__module__)\n")
    assert fresh_python(probe).split() == ["True", "True", "urllib.request"]


def imports_paho_client(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("paho.mqtt.client") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module == "paho.mqtt.client" or (
                node.module == "paho.mqtt" and any(a.name == "client" for a in node.names))):
            return True
    return False


def test_only_one_module_imports_paho_client() -> None:
    """Another direct import that ran first would load the HTTP stack again for whoever imported it."""
    files = [*ROOT.joinpath("src", "edgeops").rglob("*.py"), *ROOT.joinpath("edge_agent").rglob("*.py")]
    importers = sorted(str(f.relative_to(ROOT)) for f in files if imports_paho_client(ast.parse(f.read_text())))
    assert importers == [HOME]

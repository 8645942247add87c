// Passkeys on Portcullis' pages: the only script the pages load, and only the pages with a
// passkey button. A form with data-passkey ("create" or "get") asks its data-begin address for
// the WebAuthn options, lets the browser's authenticator answer, and sends the answer in the
// form's hidden "state" and "credential" fields, as an ordinary form post.
(function () {
  "use strict";

  function fromB64url(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (c) { return Object.assign({}, c, { id: fromB64url(c.id) }); });
  }

  function publicKey(kind, options) {
    var p = Object.assign({}, options.publicKey);
    p.challenge = fromB64url(p.challenge);
    if (kind === "create") {
      p.user = Object.assign({}, p.user, { id: fromB64url(p.user.id) });
      p.excludeCredentials = withIds(p.excludeCredentials);
    } else {
      p.allowCredentials = withIds(p.allowCredentials);
    }
    return p;
  }

  function credentialJson(c) {
    var r = c.response, response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      response.userHandle = r.userHandle ? toB64url(r.userHandle) : null;
    }
    return { id: c.id, rawId: toB64url(c.rawId), type: c.type, response: response, extensions: c.getClientExtensionResults() };
  }

  function fail(form, message) {
    var out = form.querySelector("[data-passkey-error]");
    if (out) { out.textContent = message; out.hidden = false; }
    var button = form.querySelector("button");
    if (button) button.disabled = false;
  }

  function begin(form) {
    var kind = form.dataset.passkey;
    if (!window.PublicKeyCredential || !navigator.credentials) {
      fail(form, "This browser cannot use passkeys.");
      return;
    }
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.dataset.begin, { method: "POST", credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (res) {
        return res.json().then(function (body) {
          if (!res.ok) {
            if (body.code === "reauthentication_required") {
              window.location.href = "/login?reauth=1&return_to=" + encodeURIComponent(window.location.pathname);
            }
            throw new Error(body.detail || body.title || "The server refused.");
          }
          return body;
        });
      })
      .then(function (ceremony) {
        var options = { publicKey: publicKey(kind, ceremony.options) };
        var asked = kind === "create" ? navigator.credentials.create(options) : navigator.credentials.get(options);
        return asked.then(function (credential) {
          if (!credential) throw new Error("No passkey was chosen.");
          form.querySelector("input[name=state]").value = ceremony.state;
          form.querySelector("input[name=credential]").value = JSON.stringify(credentialJson(credential));
          form.submit();
        });
      })
      .catch(function (e) {
        var cancelled = e && (e.name === "NotAllowedError" || e.name === "AbortError");
        fail(form, cancelled ? "No passkey was used. Try again, or use another way to sign in." : String(e.message || e));
      });
  }

  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      begin(form);
    });
  });
})();

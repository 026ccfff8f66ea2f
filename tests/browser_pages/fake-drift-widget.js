/* A stand-in for Drift's widget, the script the snippet's drift.load() fetches. Like the real
   one it takes over the snippet's stub (`init` set, methods replaced), replays the calls the stub
   queued (drift.on subscriptions included), then, a moment later as after a network fetch, sets
   drift.api and emits `ready`. A `ready` listener added after that is not called: Drift's docs
   do not promise it, so the script under test must not rely on it.
   The test drives it with window.__fakeDrift.emitAll([{event, payload}, ...]). */
(function () {
  "use strict";
  var drift = window.driftt;
  var queued = drift.splice(0, drift.length);
  var listeners = {};

  function emit(name, args) {
    (listeners[name] || []).slice().forEach(function (listener) {
      listener.apply(null, args);
    });
  }

  drift.methods.forEach(function (method) {
    drift[method] = function () {
      return drift;
    };
  });
  drift.on = function (name, listener) {
    (listeners[name] = listeners[name] || []).push(listener);
    return drift;
  };
  drift.off = function (name, listener) {
    listeners[name] = (listeners[name] || []).filter(function (each) {
      return each !== listener;
    });
    return drift;
  };
  drift.init = true;
  queued.forEach(function (call) {
    drift[call[0]].apply(drift, call.slice(1));
  });

  window.__fakeDrift = {
    ready: false,
    emitAll: function (events) {
      events.forEach(function (each) {
        emit(each.event, [each.payload]);
      });
    }
  };

  window.setTimeout(function () {
    var state = {chatOpen: false, widgetVisible: true, isOnline: true, teamAvailability: {}};
    var payload = {chatOpen: false, widgetVisible: true, isOnline: true, teamAvailability: {},
                   data: state};
    drift.api = {
      openChat: function () {},
      startInteraction: function () {},
      widget: {show: function () {}, hide: function () {}}
    };
    emit("ready", [drift.api, payload]);
    var bubble = document.getElementById("drift-widget");
    if (bubble) {
      bubble.hidden = false;
    }
    window.__fakeDrift.ready = true;
  }, 50);
})();

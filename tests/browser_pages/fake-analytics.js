/* A stand-in for Segment's analytics.js. Like the real one it takes over the snippet's stub
   (methods replaced, `initialized` set) and replays the calls the stub queued, in order. Every
   call is recorded into window.__calls as [method, ...arguments], copied at call time; an
   undefined value is kept as "<undefined>" so that a property sent as undefined shows. */
(function () {
  "use strict";
  var analytics = window.analytics;
  var queued = analytics.splice(0, analytics.length);
  var calls = window.__calls = window.__calls || [];

  function snapshot(call) {
    return JSON.parse(JSON.stringify(call, function (key, value) {
      return value === undefined ? "<undefined>" : value;
    }));
  }

  // For the screenshot; this async script may run before the page's body is parsed.
  function show() {
    var shown = document.getElementById("calls");
    if (shown) {
      shown.textContent = calls.map(function (call) {
        return JSON.stringify(call);
      }).join("\n");
    }
  }

  analytics.methods.forEach(function (method) {
    analytics[method] = function () {
      calls.push(snapshot([method].concat(Array.prototype.slice.call(arguments))));
      show();
      return analytics;
    };
  });
  // `ready` only schedules the page's own code (Drift's example loads Drift in it): not a call
  // to record.
  analytics.ready = function (callback) {
    window.setTimeout(callback, 0);
    return analytics;
  };
  analytics.initialized = true;
  queued.forEach(function (call) {
    analytics[call[0]].apply(analytics, call.slice(1));
  });
})();

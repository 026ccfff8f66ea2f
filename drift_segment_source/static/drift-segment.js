/*! drift-segment.js, from drift-segment-source: the Drift widget's events as Segment track
 * calls, the "Client Side Events" of Drift's Segment Source app (its documented example).
 *
 * Add it after the Segment and Drift snippets (any order works, see docs/client-script.md):
 *   <script src="https://YOUR-SERVICE/drift-segment.js" async></script>
 * It sets Segment's anonymousId to the Drift contact id, so the browser's events land on the
 * same profile as the server-side Drift events. To keep your own anonymousId instead:
 *   <script src="https://YOUR-SERVICE/drift-segment.js" data-set-anonymous-id="false" async></script>
 */
(function (window, document) {
  "use strict";

  // A second copy on the page must not subscribe again: every event would be tracked twice.
  if (window.driftSegmentSource) {
    return;
  }

  var EVENT_PREFIX = "Drift Source Event: ";
  // The snippets may come later (a tag manager, an async loader): look for them this often,
  // and give up after this many looks (30 s) so a page without them pays nothing more.
  var POLL_MS = 100;
  var POLL_LIMIT = 300;
  // Calls made before Segment's snippet ran wait in memory; a page without Segment must not
  // grow this without end.
  var PENDING_LIMIT = 100;

  // Drift's documented example, event by event: each Segment property and the path of the Drift
  // payload field it is read from; `contactId` names the field holding the Drift contact id
  // on the two events where Drift's documentation sets Segment's anonymousId.
  var WIDGET_EVENTS = [
    {
      name: "conversation:firstInteraction",
      contactId: "authorId",
      properties: [
        ["conversationId", "conversationId"],
        ["playbookId", "playbookId"],
        ["campaignId", "campaignId"],
        ["contactId", "authorId"]
      ]
    },
    {
      name: "startConversation",
      contactId: "endUserId",
      properties: [
        ["conversationId", "conversationId"],
        ["inboxId", "inboxId"],
        ["contactId", "endUserId"],
        ["email", "endUserEmail"]
      ]
    },
    {
      name: "conversation:selected",
      properties: [["driftConversationId", "conversationId"]]
    },
    {
      name: "scheduling:requestMeeting",
      properties: [
        ["driftTeamMemberId", "teamMember.id"],
        ["driftTeamMemberName", "teamMember.name"]
      ]
    },
    {
      name: "conversation:playbookFired",
      properties: [["playbookId", "playbookId"], ["campaignId", "campaignId"]]
    },
    {
      name: "conversation:playbookClicked",
      properties: [["playbookId", "playbookId"], ["campaignId", "campaignId"]]
    },
    {
      name: "conversation:playbookDismissed",
      properties: [["playbookId", "playbookId"], ["campaignId", "campaignId"]]
    },
    {name: "campaign:open", properties: [["campaignId", "campaignId"]]},
    {name: "campaign:dismiss", properties: [["campaignId", "campaignId"]]},
    {name: "campaign:click", properties: [["campaignId", "campaignId"]]},
    {name: "campaign:submit", properties: [["campaignId", "campaignId"]]},
    {
      name: "sliderMessage:close",
      properties: [["campaignId", "campaignId"], ["playbookId", "playbookId"]]
    }
  ];

  /** The script tag that loaded this file (its data- attributes are the options). */
  function ownScriptTag() {
    // currentScript is only set while this file first runs, which is now.
    if (document.currentScript) {
      return document.currentScript;
    }
    var scripts = document.getElementsByTagName("script");
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (/drift-segment\.js(\?|#|$)/.test(scripts[i].src || "")) {
        return scripts[i];
      }
    }
    return null;
  }

  /** Whether the site lets this script set Segment's anonymousId (Drift's documented advice). */
  function anonymousIdWanted(tag) {
    var value = tag && tag.getAttribute("data-set-anonymous-id");
    return !(value && /^\s*(false|0|no|off)\s*$/i.test(value));
  }

  var settings = {setAnonymousId: anonymousIdWanted(ownScriptTag())};
  window.driftSegmentSource = settings;

  /** The value at a dotted path of a Drift payload, or undefined when any step is missing. */
  function read(payload, path) {
    var steps = path.split(".");
    var value = payload;
    for (var i = 0; i < steps.length; i++) {
      if (value === null || typeof value !== "object") {
        return undefined;
      }
      value = value[steps[i]];
    }
    return value;
  }

  /** A Drift contact id worth giving Segment: a number or a non-empty string. */
  function isContactId(value) {
    return (typeof value === "number" && isFinite(value)) ||
      (typeof value === "string" && value !== "");
  }

  var pending = [];
  var analyticsPolls = 0;
  var analyticsTimer = null;

  /** Hand the waiting calls to Segment, or look again shortly if its snippet has not run. */
  function flush() {
    analyticsTimer = null;
    var analytics = window.analytics;
    if (!analytics || typeof analytics.track !== "function") {
      if (++analyticsPolls <= POLL_LIMIT) {
        analyticsTimer = window.setTimeout(flush, POLL_MS);
      } else {
        pending = [];
      }
      return;
    }
    analyticsPolls = 0;
    while (pending.length) {
      var call = pending.shift();
      var method = analytics[call[0]];
      if (typeof method === "function") {
        try {
          method.apply(analytics, call[1]);
        } catch (ignored) {
          // The site's analytics failing must not break the widget or its other listeners.
        }
      }
    }
  }

  /** Call analytics[method](...args) now, or as soon as Segment's snippet has run. */
  function send(method, args) {
    pending.push([method, args]);
    if (pending.length > PENDING_LIMIT) {
      pending.shift();
    }
    if (analyticsTimer === null) {
      flush();
    }
  }

  /** The Drift listener for one widget event: the documented calls for it. */
  function listenerFor(event) {
    return function (payload) {
      var properties = {};
      for (var i = 0; i < event.properties.length; i++) {
        var value = read(payload, event.properties[i][1]);
        // Absent stays absent: Segment never receives a null or undefined the payload lacked.
        if (value !== undefined && value !== null) {
          properties[event.properties[i][0]] = value;
        }
      }
      if (event.contactId && settings.setAnonymousId) {
        var contactId = read(payload, event.contactId);
        if (isContactId(contactId)) {
          // A string, as the server-side events' anonymousId is, so both land on one profile.
          send("setAnonymousId", [String(contactId)]);
        }
      }
      send("track", [EVENT_PREFIX + event.name, properties]);
    };
  }

  /** Drift's object: the loaded widget, or the snippet's stub that queues calls until then. */
  function findDrift() {
    var drift = window.drift || window.driftt;
    return drift && typeof drift.on === "function" ? drift : null;
  }

  var subscribed = false;

  /** Listen to every widget event of Drift's documented example, once per page. */
  function subscribe() {
    var drift = findDrift();
    if (subscribed || !drift) {
      return;
    }
    subscribed = true;
    for (var i = 0; i < WIDGET_EVENTS.length; i++) {
      drift.on(WIDGET_EVENTS[i].name, listenerFor(WIDGET_EVENTS[i]));
    }
  }

  var driftPolls = 0;

  /** Subscribe when Drift is ready (as Drift's documentation does), or now if it already is. */
  function attach() {
    var drift = findDrift();
    if (!drift) {
      if (++driftPolls <= POLL_LIMIT) {
        window.setTimeout(attach, POLL_MS);
      }
      return;
    }
    // The snippet's stub queues this until the widget loads; the widget then replays it.
    drift.on("ready", subscribe);
    // `api` appears once the widget is ready; a ready event already past will not come again.
    if (drift.api) {
      subscribe();
    }
  }

  attach();
})(window, document);

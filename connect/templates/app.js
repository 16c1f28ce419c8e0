// Shows the times on the connect server's pages in the browser's time
// zone; the server writes UTC, which stays in each time's title. "Last
// used" times within a week read as "3 minutes ago". Pages work without
// this script.
(function () {
  'use strict';
  var absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  var relative = typeof Intl.RelativeTimeFormat === 'function'
    ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }) : null;
  var units = [['day', 86400], ['hour', 3600], ['minute', 60]];

  function ago(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    if (!relative || seconds > 60 || seconds < -7 * 86400) {
      return null;
    }
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) {
        return relative.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
    return relative.format(0, 'minute');
  }

  var times = document.querySelectorAll('time[datetime]');
  for (var i = 0; i < times.length; i++) {
    var el = times[i];
    var date = new Date(el.getAttribute('datetime'));
    if (isNaN(date.getTime())) {
      continue;
    }
    var utc = el.getAttribute('title') || el.textContent;
    var local = absolute.format(date);
    var text = (el.classList.contains('ago') && ago(date)) || local;
    el.textContent = text;
    el.setAttribute('title', text === local ? utc : local + ' (' + utc + ')');
  }
}());

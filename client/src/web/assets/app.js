// The inspector page's script (placeholder until the page is built).
"use strict";

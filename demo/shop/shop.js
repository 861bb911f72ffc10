// The demo shop: a catalogue, a cart and a checkout, routed on the client with pushState, sending
// its events with the InsightFlow SDK's <script> bundle (window.InsightFlow).
(function () {
  'use strict';

  // ---- configuration: ?endpoint=&key=&debug=1&flush=MS&retryMax=MS on the URL, else config.js, else defaults. Kept in
  // sessionStorage so the tab keeps it while the shop changes its URL.
  var params = new URLSearchParams(location.search);
  var saved = JSON.parse(sessionStorage.getItem('shop:config') || 'null') || {};
  var file = window.INSIGHTFLOW_CONFIG || {};
  var config = {
    endpoint: params.get('endpoint') || saved.endpoint || file.endpoint || 'http://' + location.hostname + ':8080',
    writeKey: params.get('key') || saved.writeKey || file.writeKey || 'wk_demo_shop',
    debug: params.has('debug') ? params.get('debug') === '1' : !!(saved.debug || file.debug),
    flushIntervalMs: Number(params.get('flush') || saved.flushIntervalMs || file.flushIntervalMs || 5000),
    // The longest wait between retries while the gateway is down (tests shorten it).
    retryMaxMs: Number(params.get('retryMax') || saved.retryMaxMs || file.retryMaxMs || 60000),
  };
  sessionStorage.setItem('shop:config', JSON.stringify(config));

  // A page loaded at /cart/ directly comes here as /?route=/cart/ (see cart/index.html).
  var route = params.get('route');
  if (route && route.charAt(0) === '/') history.replaceState(null, '', route);
  else if (['endpoint', 'key', 'debug', 'flush', 'retryMax'].some(function (p) { return params.has(p); })) {
    history.replaceState(null, '', location.pathname); // keep the configuration out of page URLs
  }

  var sdk = window.InsightFlow;
  var status = document.getElementById('sdk-status');
  if (!sdk) {
    status.textContent = 'The SDK bundle (/insightflow.min.js) did not load: run `make run` or npm run build in sdk/js.';
    sdk = { track: function () {}, trackPurchase: function () {}, identify: function () {}, reset: function () {}, getUserId: function () { return null; } };
  } else {
    sdk.init({
      writeKey: config.writeKey,
      endpoint: config.endpoint,
      debug: config.debug,
      flushIntervalMs: config.flushIntervalMs,
      retryMaxMs: config.retryMaxMs,
      respectDoNotTrack: true,
    });
    status.textContent = 'Sending to ' + config.endpoint + '.';
  }

  // ---- catalogue and cart --------------------------------------------------------------------
  var PRODUCTS = [
    { sku: 'tee-navy', name: 'Navy tee', price: 19.0, colour: '#24345c' },
    { sku: 'hoodie-grey', name: 'Grey hoodie', price: 49.0, colour: '#8b8f99' },
    { sku: 'cap-red', name: 'Red cap', price: 15.5, colour: '#c8413b' },
    { sku: 'socks-stripe', name: 'Striped socks', price: 9.9, colour: '#e3a33b' },
    { sku: 'jacket-green', name: 'Green jacket', price: 89.0, colour: '#3c7a4f' },
    { sku: 'bag-canvas', name: 'Canvas bag', price: 24.0, colour: '#c9b58f' },
  ];
  var bySku = {};
  PRODUCTS.forEach(function (p) { bySku[p.sku] = p; });

  var cart = JSON.parse(localStorage.getItem('shop:cart') || '[]');
  function saveCart() {
    localStorage.setItem('shop:cart', JSON.stringify(cart));
    document.getElementById('cart-count').textContent = String(cart.reduce(function (n, l) { return n + l.quantity; }, 0));
  }
  function total() {
    return Math.round(cart.reduce(function (s, l) { return s + bySku[l.sku].price * l.quantity; }, 0) * 100) / 100;
  }
  function add(sku) {
    var line = cart.filter(function (l) { return l.sku === sku; })[0];
    if (line) line.quantity += 1;
    else cart.push({ sku: sku, quantity: 1 });
    saveCart();
    sdk.track('cart_add', { sku: sku, price: bySku[sku].price, currency: 'EUR' });
  }
  function remove(sku) {
    cart = cart.filter(function (l) { return l.sku !== sku; });
    saveCart();
    sdk.track('cart_remove', { sku: sku });
    render();
  }

  // ---- views -----------------------------------------------------------------------------------
  var view = document.getElementById('view');
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }

  function products() {
    document.title = 'Products · InsightFlow demo shop';
    view.innerHTML =
      '<h1>Products</h1><div class="grid">' +
      PRODUCTS.map(function (p) {
        return '<article class="product" id="product-' + p.sku + '">' +
          '<div class="swatch" style="background:' + p.colour + '"></div>' +
          '<h2>' + esc(p.name) + '</h2><p class="price">€' + p.price.toFixed(2) + '</p>' +
          '<button type="button" class="add-to-cart" data-sku="' + p.sku + '">Add to cart</button></article>';
      }).join('') +
      '</div><section class="story"><h2>About us</h2>' +
      new Array(12).join('<p>We make plain, durable clothes in small batches. Scroll on: the SDK reports how far you read.</p>') +
      '</section>';
  }

  function cartView() {
    document.title = 'Cart · InsightFlow demo shop';
    if (!cart.length) {
      view.innerHTML = '<h1>Your cart</h1><p id="empty-cart">Your cart is empty. <a href="/" data-route>Back to the products</a>.</p>';
      return;
    }
    view.innerHTML =
      '<h1>Your cart</h1><table><thead><tr><th>Product</th><th>Qty</th><th>Price</th><th></th></tr></thead><tbody>' +
      cart.map(function (l) {
        var p = bySku[l.sku];
        return '<tr id="line-' + l.sku + '"><td>' + esc(p.name) + '</td><td>' + l.quantity + '</td><td>€' +
          (p.price * l.quantity).toFixed(2) + '</td><td><button type="button" class="remove" data-sku="' + l.sku + '">Remove</button></td></tr>';
      }).join('') +
      '</tbody></table><p>Total: <strong id="cart-total">€' + total().toFixed(2) + '</strong></p>' +
      '<form class="checkout" id="checkout" name="checkout" action="/checkout" method="post">' +
      '<label>Name <input name="name" autocomplete="name" required></label>' +
      '<label>Email <input name="email" type="email" autocomplete="email" required></label>' +
      '<button type="submit" class="primary" id="place-order">Place order</button></form>';
  }

  function thanks() {
    document.title = 'Thank you · InsightFlow demo shop';
    var order = JSON.parse(sessionStorage.getItem('shop:last-order') || 'null');
    view.innerHTML = order
      ? '<h1>Thank you!</h1><p>Order <strong id="order-id">' + esc(order.order_id) + '</strong>, €' + order.total.toFixed(2) + '.</p><p><a href="/" data-route>Keep shopping</a></p>'
      : '<h1>No order yet</h1><p><a href="/" data-route>Products</a></p>';
  }

  function render() {
    var path = location.pathname;
    if (path === '/cart/' || path === '/cart') cartView();
    else if (path === '/thanks/' || path === '/thanks') thanks();
    else products();
    saveCart();
  }

  function go(path) {
    if (path === location.pathname) return;
    history.pushState(null, '', path); // the SDK sees it and records a page view
    render();
    window.scrollTo(0, 0);
  }

  // ---- wiring: one delegated listener (the SDK's own click listener sees every click too) -------
  document.addEventListener('click', function (e) {
    var link = e.target.closest('a[data-route]');
    if (link) {
      e.preventDefault();
      go(link.getAttribute('href'));
      return;
    }
    var addButton = e.target.closest('button.add-to-cart');
    if (addButton) return add(addButton.getAttribute('data-sku'));
    var removeButton = e.target.closest('button.remove');
    if (removeButton) return remove(removeButton.getAttribute('data-sku'));
    if (e.target.closest('#sign-in')) {
      if (sdk.getUserId()) sdk.reset();
      else sdk.identify('demo-user', { plan: 'free' });
      signInLabel();
    }
  });

  document.addEventListener('submit', function (e) {
    if (e.target.id !== 'checkout') return;
    e.preventDefault();
    var order = {
      order_id: 'o-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 6),
      total: total(),
      currency: 'EUR',
      items: cart.map(function (l) { return { sku: l.sku, name: bySku[l.sku].name, price: bySku[l.sku].price, quantity: l.quantity }; }),
    };
    sdk.trackPurchase(order); // never the name or email typed into the form
    sessionStorage.setItem('shop:last-order', JSON.stringify(order));
    cart = [];
    go('/thanks/');
  });

  window.addEventListener('popstate', render);

  function signInLabel() {
    document.getElementById('sign-in').textContent = sdk.getUserId() ? 'Sign out (' + sdk.getUserId() + ')' : 'Sign in as demo user';
  }
  signInLabel();
  render();
})();
